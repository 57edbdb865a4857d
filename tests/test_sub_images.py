"""High-resolution sub-images: the views an image is cut into, their order, the separators, and the
token counts every layout gives the collator and the text budget."""
import pytest
import torch
from omegaconf import OmegaConf

from minigpt.common import registry
from minigpt.common.errors import ConfigError
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.models.image_tokens import image_token_count
from minigpt.models.sub_images import join_views, split_views, tokens_per_image


def build(shapes_dir, cfg_path, grid, *options):
    """The config's tiny model with a grid x grid sub-image layout (its data sets' images resized to match)."""
    written = OmegaConf.load(cfg_path)
    sizes = [f"datasets.{name}.vis_processor.train.image_size={written.model.image_size * grid}" for name in written.datasets]
    config = load_config(cfg_path, [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null",
                                    f"model.sub_image_grid={grid}", *sizes, *options], for_training=False)
    torch.manual_seed(0)
    return registry.get("model", config.model.arch).from_config(config.model), config


@pytest.mark.parametrize("grid", [2, 3])
def test_views_are_the_global_view_then_sub_images_row_by_row(grid):
    size = 4
    # Each sub-image is filled with its own number: row * grid + column.
    tiles = torch.arange(grid * grid, dtype=torch.float32).view(grid, grid)
    image = tiles.repeat_interleave(size, 0).repeat_interleave(size, 1).expand(1, 3, grid * size, grid * size)
    views = split_views(image, grid)  # [1 + g*g, 3, S, S]
    assert views.shape == (1 + grid * grid, 3, size, size)
    for index in range(grid * grid):
        assert torch.all(views[1 + index] == index), index
    torch.testing.assert_close(views[0], torch.nn.functional.avg_pool2d(image, grid)[0])
    with pytest.raises(ValueError, match="does not split"):
        split_views(torch.zeros(1, 3, grid * size + 1, grid * size + 1), grid)


def test_a_separator_follows_each_view():
    view_embeds = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2 * 5, 3, 1).expand(-1, -1, 4)  # 2 images, 5 views, M=3
    separator = torch.full((4,), -1.0)
    joined = join_views(view_embeds, 2, separator)
    assert joined.shape == (2, 5 * (3 + 1), 4)
    per_view = joined.view(2, 5, 4, 4)
    assert torch.all(per_view[:, :, 3] == -1)  # the last slot of every view is the separator
    torch.testing.assert_close(per_view[:, :, :3], view_embeds.view(2, 5, 3, 4))


LAYOUTS = {  # name -> (config, tokens per view, extra options)
    "concat4": ("train_configs/tiny_v2.yaml", 16, []),
    "qformer": ("train_configs/tiny_stage2.yaml", 8, []),
    "concat4_mlp": ("train_configs/tiny_v2.yaml", 16, ["model.proj_type=mlp"]),
    "mixed_encoders": ("train_configs/tiny_v2.yaml", 16, ["model.extra_encoders=[{timm_model: convnext_atto, "
                                                          "timm_config: {dims: [8, 16, 24, 40], depths: [1, 1, 1, 1]}}]"]),
}


@pytest.mark.parametrize("grid", [1, 2, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_token_counts_and_order_in_the_image_slot(shapes_dir, layout, grid):
    cfg_path, per_view, options = LAYOUTS[layout]
    model, config = build(shapes_dir, cfg_path, grid, *options)
    expected = per_view if grid == 1 else (1 + grid * grid) * (per_view + 1)
    assert model.num_image_tokens == expected == image_token_count(config.model) == tokens_per_image(per_view, grid)
    assert collator_for(model).num_image_tokens == expected

    model.eval()
    size = config.model.image_size
    images = torch.randn(2, 3, grid * size, grid * size)
    with torch.no_grad():
        image_embeds = model.encode_image(images)  # [B, num_image_tokens, D]
    assert image_embeds.shape[:2] == (2, expected)
    if grid == 1:
        return
    # Slot order: the global view's tokens, a separator, then each sub-image's tokens and a separator.
    with torch.no_grad():
        views = split_views(images, grid).view(2, 1 + grid * grid, 3, size, size)
        for image in range(2):
            for view in range(1 + grid * grid):
                start = view * (per_view + 1)
                alone = model._encode_views(views[image, view:view + 1])[0]
                torch.testing.assert_close(image_embeds[image, start:start + per_view], alone, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(image_embeds[image, start + per_view], model.view_separator)


def test_the_prompt_holds_every_image_token_and_the_budget_counts_them(shapes_dir):
    model, config = build(shapes_dir, "train_configs/tiny_v2.yaml", 2)
    sample = {"id": "a", "image": torch.zeros(3, 64, 64), "task": "vqa",
              "turns": [("user", "What color is it?"), ("assistant", "red")]}
    batch = collator_for(model, config.model.max_txt_len)([sample])
    assert batch["image_slots"].sum().item() == 5 * 17
    model.train()
    model(batch)["loss"].backward()
    assert model.view_separator.grad is not None and model.view_separator.grad.abs().sum() > 0

    # A prompt of 90 tokens holds one view's 16 image tokens and the text, not the 85 of 2 x 2 sub-images and the text.
    plain, _ = build(shapes_dir, "train_configs/tiny_v2.yaml", 1, "model.max_context_len=90")
    assert not collator_for(plain)([{**sample, "image": torch.zeros(3, 32, 32)}])["skipped"]
    tight, _ = build(shapes_dir, "train_configs/tiny_v2.yaml", 2, "model.max_context_len=90")
    assert [s["reason"] for s in collator_for(tight)([sample])["skipped"]] == ["prompt over max_context_len"]


def test_text_only_batches_train_with_sub_images(shapes_dir):
    model, _ = build(shapes_dir, "train_configs/tiny_v2.yaml", 2)
    model.train()
    batch = collator_for(model)([{"id": "t", "image": None, "task": None,
                               "turns": [("user", "Say red."), ("assistant", "red")]}])
    model(batch)["loss"].backward()
    assert model.view_separator.grad is not None  # reached through the masked-out blank image


def test_processor_size_must_match_the_sub_image_input(shapes_dir):
    with pytest.raises(ConfigError, match="32, but the model takes 64-pixel images .*sub_image_grid 2") as error:
        load_config("train_configs/tiny_v2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.sub_image_grid=2",
                                                   f"datasets.sharegpt4v.build_info.ann_path={shapes_dir}/train.json",
                                                   f"datasets.sharegpt4v.build_info.image_path={shapes_dir}/images",
                                                   f"datasets.grounding.build_info.ann_path={shapes_dir}/train.json",
                                                   f"datasets.grounding.build_info.image_path={shapes_dir}/images"])
    assert error.value.key == "datasets.sharegpt4v.vis_processor.train.image_size"
    with pytest.raises(ConfigError, match="must be >= 1"):
        load_config("train_configs/tiny_v2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.sub_image_grid=0"],
                    for_training=False)
