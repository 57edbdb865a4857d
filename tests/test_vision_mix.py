"""Mixed visual embeddings: extra timm encoders aligned to the EVA ViT's grid and concatenated along
channels, under every projector (Q-Former, concat-4, MLP); their modes, checkpoints and config checks."""
import pytest
import torch
from safetensors.torch import save_file

from minigpt.common import registry
from minigpt.common.errors import ConfigError
from minigpt.config.loader import load_config
from minigpt.models.vision_mix import ExtraEncoder, build_extra_encoder, load_timm_weights

VIT = "{timm_model: vit_small_patch14_dinov2, timm_config: {patch_size: 4, embed_dim: 32, depth: 1, num_heads: 2}}"
CNN = "{timm_model: convnext_atto, timm_config: {dims: [8, 16, 24, 40], depths: [1, 1, 1, 1]}, mode: full}"
MIX = f"model.extra_encoders=[{VIT}, {CNN}]"

PROJECTORS = {  # name -> (config, options)
    "qformer": ("train_configs/tiny_stage2.yaml", ["model.ckpt=null"]),
    "concat4": ("train_configs/tiny_v2.yaml", []),
    "mlp": ("train_configs/tiny_v2.yaml", ["model.proj_type=mlp"]),
    "qformer_mlp": ("train_configs/tiny_stage2.yaml", ["model.ckpt=null", "model.proj_type=mlp"]),
}


def build(shapes_dir, cfg_path, options):
    config = load_config(cfg_path, [f"model.tokenizer={shapes_dir}/tokenizer", *options], for_training=False)
    torch.manual_seed(0)
    return registry.get("model", config.model.arch).from_config(config.model), config


@pytest.mark.parametrize("projector", PROJECTORS)
def test_mixed_tokens_reach_every_projector(shapes_dir, projector):
    cfg_path, options = PROJECTORS[projector]
    plain, _ = build(shapes_dir, cfg_path, options)
    mixed, config = build(shapes_dir, cfg_path, [*options, MIX])
    size = config.model.image_size
    images = torch.randn(3, 3, size, size)

    eva_width = mixed.visual_encoder.num_features
    tokens = mixed._encoder_features(images, through_qformer=False)
    grid_tokens = 1 + (size // 4) ** 2
    assert tokens.shape == (3, grid_tokens, eva_width + 32 + 40)  # EVA + DINOv2-like ViT + ConvNeXt channels
    # The EVA channels are the EVA ViT's own tokens, unchanged by the mix.
    with torch.no_grad():
        eva_alone = mixed.ln_vision(mixed.visual_encoder.forward_features(images))
    torch.testing.assert_close(tokens[..., :eva_width], eva_alone)

    image_embeds = mixed.encode_image(images)
    assert image_embeds.shape == (3, plain.num_image_tokens, plain.llama_model.config.hidden_size)
    assert mixed.num_image_tokens == plain.num_image_tokens  # the mix widens tokens, it adds none
    first_layer = mixed.llama_proj[0] if projector.endswith("mlp") else mixed.llama_proj
    expected_in = (mixed.Qformer.config.hidden_size if mixed.Qformer is not None else 4 * (eva_width + 72))
    assert first_layer.in_features == expected_in
    if mixed.Qformer is not None:
        assert mixed.Qformer.config.encoder_hidden_size == eva_width + 72

    image_embeds.sum().backward()  # a trainable extra encoder gets gradients, a frozen one none
    assert mixed.extra_encoders[1].model.stem[0].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in mixed.extra_encoders[0].parameters())
    assert mixed.part_modes["extra_encoder_0"] == "frozen" and mixed.part_modes["extra_encoder_1"] == "full"


class FixedFeatures(torch.nn.Module):
    """A stand-in timm model whose forward_features returns a set tensor (to follow tokens by value) and
    keeps the pixels it was given."""

    def __init__(self, features: torch.Tensor, num_features: int, num_prefix_tokens: int = 0):
        super().__init__()
        self.features, self.num_features, self.num_prefix_tokens = features, num_features, num_prefix_tokens
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward_features(self, pixels):
        self.seen = pixels
        return self.features


def aligned(features, num_features, grid, num_prefix_tokens=0):
    encoder = ExtraEncoder(FixedFeatures(features, num_features, num_prefix_tokens), 4, (0.5,) * 3, (0.5,) * 3)
    encoder.norm = torch.nn.Identity()
    return encoder(torch.zeros(1, 3, 4, 4), grid)


def test_tokens_keep_their_grid_positions_and_the_cls_slot_holds_their_mean():
    """Row-major order from a CNN map (NCHW or channels last) and from ViT tokens after their prefix;
    a larger grid is resampled to the EVA grid."""
    grid_map = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # [B, C, h, w], distinct values
    row_major = grid_map.flatten(2).transpose(1, 2)  # [1, 16, 2]
    for features in (grid_map, grid_map.permute(0, 2, 3, 1)):  # NCHW, NHWC
        tokens = aligned(features, 2, grid=4)
        torch.testing.assert_close(tokens[:, 1:], row_major)
        torch.testing.assert_close(tokens[:, 0], row_major.mean(dim=1))
    prefix = torch.full((1, 2, 2), -7.0)  # CLS and one register token: dropped
    tokens = aligned(torch.cat([prefix, row_major], dim=1), 2, grid=4, num_prefix_tokens=2)
    torch.testing.assert_close(tokens[:, 1:], row_major)

    fine = torch.randn(1, 3, 16, 16)
    tokens = aligned(fine, 3, grid=8)  # 16 x 16 -> 8 x 8, antialiased
    expected = torch.nn.functional.interpolate(fine, size=(8, 8), mode="bilinear", antialias=True)
    torch.testing.assert_close(tokens[:, 1:], expected.flatten(2).transpose(1, 2))

    from omegaconf import OmegaConf

    from minigpt.common.schema import ExtraEncoderConfig

    for entry, width in ((VIT, 32), (CNN, 40)):  # real timm models come out on the asked grid too
        cfg = OmegaConf.merge(OmegaConf.structured(ExtraEncoderConfig), OmegaConf.create(entry))
        assert build_extra_encoder(cfg, image_size=32)(torch.randn(2, 3, 32, 32), grid=8).shape == (2, 65, width)


def test_renormalises_to_the_encoders_own_statistics():
    """Pixels come CLIP-normalised; an encoder trained with ImageNet statistics gets them re-normalised."""
    from minigpt.processors.image import CLIP_MEAN, CLIP_STD

    spy = FixedFeatures(torch.zeros(1, 3, 4, 4), num_features=3)
    encoder = ExtraEncoder(spy, 4, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    raw = torch.rand(1, 3, 4, 4)
    clip = (raw - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    encoder(clip, grid=4)
    imagenet = (raw - torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)) / torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    torch.testing.assert_close(spy.seen, imagenet)


def test_extra_weights_load_from_a_local_file_and_stay_out_of_checkpoints(shapes_dir, tmp_path):
    reference, _ = build(shapes_dir, "train_configs/tiny_v2.yaml", [f"model.extra_encoders=[{VIT}]"])
    timm_model = reference.extra_encoders[0].model
    with torch.no_grad():
        for param in timm_model.parameters():
            param.normal_()
    path = tmp_path / "dinov2_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, path)

    entry = VIT.replace("{timm_model", f"{{weights: {path}, timm_model")
    model, _ = build(shapes_dir, "train_configs/tiny_v2.yaml", [f"model.extra_encoders=[{entry}]"])
    for key, value in timm_model.state_dict().items():
        assert torch.equal(model.extra_encoders[0].model.state_dict()[key], value), key
    assert not any(key.startswith("extra_encoders.") for key in model.checkpoint_weights())  # frozen and from a file

    wrong = {k: v for k, v in timm_model.state_dict().items() if k != "patch_embed.proj.weight"}
    save_file({k: v.contiguous() for k, v in wrong.items()}, tmp_path / "incomplete.safetensors")
    with pytest.raises(ValueError, match="missing 1 weights.*patch_embed.proj.weight"):
        load_timm_weights(model.extra_encoders[0].model, tmp_path / "incomplete.safetensors")


@pytest.mark.parametrize("option, key, message", [
    ("model.extra_encoders=[{timm_model: no_such_net}]", "model.extra_encoders.0.timm_model", "not a timm architecture"),
    ("model.extra_encoders=[{timm_model: convnext_atto, mode: lora}]", "model.extra_encoders.0.mode", "not frozen or full"),
    ("model.extra_encoders=[{timm_model: convnext_atto, weights: /nowhere.pth}]", "model.extra_encoders.0.weights",
     "does not exist"),
    ("model.extra_encoders=[{timm_model: convnext_atto, mean: [0.5]}]", "model.extra_encoders.0.mean", "3 values"),
    ("model.proj_type=transformer", "model.proj_type", "not linear or mlp"),
    ("model.max_context_len=16", "model.max_context_len", "16, but one image takes 16 tokens: no room would be left"),
])
def test_config_errors_name_the_key(shapes_dir, option, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config("train_configs/tiny_v2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", option], for_training=False)
    assert error.value.key == key


def test_blip2_qformer_weights_refused_with_a_mix(shapes_dir, tmp_path):
    qformer_file = tmp_path / "blip2.pth"
    qformer_file.write_bytes(b"")
    with pytest.raises(ConfigError, match="cross-attends to the EVA ViT's tokens alone") as error:
        load_config("train_configs/tiny_stage2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null",
                                                       f"model.q_former_model={qformer_file}", MIX], for_training=False)
    assert error.value.key == "model.q_former_model"


def test_tiny_mix_config_trains_and_its_checkpoint_reloads(shapes_dir, tmp_path):
    """train_configs/tiny_mix.yaml through the training recipe: the loss falls, the trained ConvNeXt and
    the MLP projector are saved, and a model built from the config answers alike from the checkpoint."""
    from conftest import REPO, losses, stage2_options
    from minigpt.models.weights import load_weights
    from minigpt.runners.train_recipe import TrainRecipe

    config = load_config(REPO / "train_configs/tiny_mix.yaml", [
        *stage2_options(shapes_dir), f"run.output_dir={tmp_path}", "run.iters_per_epoch=12", "run.log_freq=2",
        "run.warmup_steps=2", "datasets.sharegpt4v.batch_size=8"])
    recipe = TrainRecipe(config)
    recipe.setup()
    recipe.train()
    recipe.close()
    curve = list(losses(tmp_path).values())
    assert curve[-1] < 0.9 * curve[0], curve  # 12 steps: 0.757 / 0.795 / 0.800 of the first loss over three seeds
    saved = recipe.model.checkpoint_weights()
    assert any(key.startswith("extra_encoders.1.model.stages") for key in saved)  # trained: saved
    assert "llama_proj.2.weight" in saved

    fresh, _ = build(shapes_dir, "train_configs/tiny_mix.yaml", [f"model.ckpt={tmp_path}"])
    load_weights(fresh, tmp_path)
    images = torch.randn(2, 3, 32, 32)
    recipe.model.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(images), recipe.model.encode_image(images))


def test_task_adapters_wrap_both_layers_of_an_mlp_projector(shapes_dir):
    from minigpt.models.adapters import target_modules

    adapters = ("model.adapters={vqa: {tasks: [vqa], vision_blocks: 0}, refer: {tasks: [refer], vision_blocks: 0}}")
    model, config = build(shapes_dir, "train_configs/tiny_v2.yaml", ["model.proj_type=mlp", MIX, adapters])
    for name in ("vqa", "refer"):  # the second adapter goes into layers that already hold the first
        names = target_modules(model, config.model.adapters[name])
        assert [n for n in names if n.startswith("llama_proj")] == ["llama_proj.0", "llama_proj.2"]
    assert set(model.llama_proj[0].lora_A) == set(model.llama_proj[2].lora_A) == {"vqa", "refer"}
