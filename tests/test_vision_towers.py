"""Vision towers beside the EVA ViT: transformers CLIP, SigLIP and DINOv2 folders and timm ViTs by name,
each at its own size and normalisation, with a layer and CLS choice, under both projectors; tiny random
towers written here, offline. The EVA path stays bit for bit what timm's Eva gives."""
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from timm.models.eva import Eva
from transformers import (BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionModel, Dinov2Config,
                          Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipConfig,
                          SiglipImageProcessor, SiglipModel, SiglipVisionModel)

from conftest import REPO
from local_hub import local_hub  # noqa: F401  (a fixture: a stand-in for the Hugging Face hub)
from minigpt.common import registry
from minigpt.common.errors import ConfigError
from minigpt.common.schema import ModelConfig
from minigpt.config.loader import load_config
from minigpt.config.sources import model_file_settings
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.inference.loading import image_processor_for
from minigpt.models.image_tokens import image_token_count
from minigpt.models.vision_encoder import EVA_CLIP_G
from minigpt.models.vision_towers import build_vision_side, build_vision_tower, tower_shape
from minigpt.runners.plan import make_plan
from minigpt.runners.plan_model import llm_config_of, planned_model

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIGLIP_MEAN, SIGLIP_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
TIMM_DINOV2 = "{patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}"


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict:
    """Tiny random towers as their hub folders hold them: whole CLIP and SigLIP models (text tower too),
    DINOv2 whose position embeddings (64 px) are resampled to its processor's 32-pixel crop."""
    root = tmp_path_factory.mktemp("towers")
    torch.manual_seed(0)
    folders = {name: root / name for name in ("clip", "siglip", "dinov2", "dinov2_reg")}
    CLIPModel(CLIPConfig(vision_config={**SMALL, "image_size": 32}, text_config=TEXT)).save_pretrained(folders["clip"])
    CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, image_mean=CLIP_MEAN,
                       image_std=CLIP_STD).save_pretrained(folders["clip"])
    SiglipModel(SiglipConfig(vision_config={**SMALL, "image_size": 32}, text_config=TEXT)).save_pretrained(folders["siglip"])
    SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=SIGLIP_MEAN,
                         image_std=SIGLIP_STD).save_pretrained(folders["siglip"])
    dinov2 = {**SMALL, "image_size": 64, "mlp_ratio": 2}
    del dinov2["intermediate_size"]
    Dinov2Model(Dinov2Config(**dinov2)).save_pretrained(folders["dinov2"])
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**dinov2, num_register_tokens=2)).save_pretrained(folders["dinov2_reg"])
    for name in ("dinov2", "dinov2_reg"):
        BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                          image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(folders[name])
    return folders


def model_cfg(vit_model, **keys):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), {"vit_model": str(vit_model), **keys})


def tokens(tower, pixels):
    with torch.no_grad():
        return tower.eval()(pixels)


PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
OWN_PREFIX = {"clip": 1, "siglip": 0, "dinov2": 1, "dinov2_reg": 3}  # CLS, and DINOv2's 2 registers after it
REFERENCE = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel, "dinov2": Dinov2Model,
             "dinov2_reg": Dinov2WithRegistersModel}


@pytest.mark.parametrize("name", list(OWN_PREFIX))
def test_a_folder_tower_gives_its_tokens_at_its_processors_size(towers, name):
    tower, ln_vision = build_vision_tower(model_cfg(towers[name]))
    assert isinstance(ln_vision, torch.nn.Identity)  # its tokens reach the projector as it gives them
    assert (tower.image_size, tower.grid, tower.num_features, tower.prefix_tokens) == (32, 4, 32, OWN_PREFIX[name])
    assert tokens(tower, PIXELS).shape == (2, OWN_PREFIX[name] + 16, 32)
    reference = REFERENCE[name].from_pretrained(towers[name]).eval()  # unset vit_layer: its last_hidden_state
    with torch.no_grad():
        torch.testing.assert_close(tokens(tower, PIXELS), reference(pixel_values=PIXELS).last_hidden_state)


@pytest.mark.parametrize("name", list(OWN_PREFIX))
def test_vit_layer_takes_that_blocks_raw_output(towers, name):
    reference = REFERENCE[name].from_pretrained(towers[name]).eval()
    with torch.no_grad():
        hidden_states = reference(pixel_values=PIXELS, output_hidden_states=True).hidden_states
    last, penultimate = (tokens(build_vision_tower(model_cfg(towers[name], vit_layer=layer))[0], PIXELS)
                         for layer in (-1, -2))
    assert torch.equal(penultimate, hidden_states[-2]) and torch.equal(last, hidden_states[-1])
    assert not torch.allclose(last, penultimate)
    penultimate_tower, _ = build_vision_tower(model_cfg(towers[name], vit_layer=-2))
    assert penultimate_tower.depth == 1  # the last block is never built


@pytest.mark.parametrize("name", list(OWN_PREFIX))
def test_vit_cls_drop_leaves_the_patches_alone(towers, name):
    kept = tokens(build_vision_tower(model_cfg(towers[name]))[0], PIXELS)
    dropped_tower, _ = build_vision_tower(model_cfg(towers[name], vit_cls="drop"))
    assert dropped_tower.prefix_tokens == 0
    assert torch.equal(tokens(dropped_tower, PIXELS), kept[:, OWN_PREFIX[name]:])


@pytest.mark.parametrize("name, layer", [("clip", -2), ("siglip", None), ("dinov2", None), ("dinov2_reg", -1)])
def test_a_trained_tower_has_no_weight_without_a_gradient(towers, name, layer):
    """Under DDP such a weight fails the step: pooling heads, norms and blocks past the layer are left out."""
    tower, _ = build_vision_tower(model_cfg(towers[name], vit_layer=layer))
    tower(PIXELS).square().mean().backward()
    assert [key for key, p in tower.named_parameters() if p.grad is None] == []


def test_normalisation_and_size_come_from_the_processor_config(towers):
    for name, mean, std in (("clip", CLIP_MEAN, CLIP_STD), ("siglip", SIGLIP_MEAN, SIGLIP_STD),
                            ("dinov2", IMAGENET_MEAN, IMAGENET_STD)):
        shape = tower_shape(model_cfg(towers[name]))
        assert (shape.image_size, list(shape.mean), list(shape.std)) == (32, mean, std), name
    # DINOv2's config.json says 64 pixels, its processor crops 32: the processor's size wins, a set one overrides
    assert tower_shape(model_cfg(towers["dinov2"], image_size=48)).grid == 6
    siglip = json.loads((towers["siglip"] / "preprocessor_config.json").read_text())
    assert siglip["size"] == {"height": 32, "width": 32} and not siglip.get("do_center_crop")


def test_a_timm_vit_by_name_at_its_size_layer_and_normalisation():
    cfg = model_cfg("timm:vit_small_patch14_reg4_dinov2", image_size=32, vit_config=OmegaConf.create(TIMM_DINOV2))
    tower, _ = build_vision_tower(cfg)
    assert (tower.image_size, tower.grid, tower.prefix_tokens, list(tower.mean)) == (32, 4, 5, IMAGENET_MEAN)
    whole = tokens(tower, PIXELS)
    assert whole.shape == (2, 5 + 16, 32)
    cut, _ = build_vision_tower(OmegaConf.merge(cfg, {"vit_layer": -2, "vit_cls": "drop"}))
    cut.model.load_state_dict(tower.model.state_dict(), strict=False)  # (its last block and norm are gone)
    vit = tower.model
    with torch.no_grad():  # the first block's raw output, by hand
        expected = vit.blocks[0](vit.norm_pre(vit._pos_embed(vit.patch_embed(PIXELS))))[:, 5:]
    assert torch.equal(tokens(cut, PIXELS), expected) and cut.depth == 1 and cut.prefix_tokens == 0
    assert not torch.allclose(whole[:, 5:], expected)


def test_the_eva_path_is_timms_eva_bit_for_bit(shapes_dir):
    """The reference is timm's Eva built as the code before vision towers built it, with the same weights."""
    config = load_config(REPO / "train_configs/tiny_stage2.yaml",
                         [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"], for_training=False)
    torch.manual_seed(0)
    model = registry.get("model", config.model.arch).from_config(config.model).eval()
    shape = {**EVA_CLIP_G, **config.model.vit_config}
    eva = Eva(img_size=64, num_classes=0, global_pool="", use_fc_norm=False, use_post_transformer_norm=False, **shape)
    eva.load_state_dict(model.visual_encoder.state_dict())
    eva.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model.ln_vision(eva.forward_features(images))  # [2, 1 + 256, 64]
        queries = model.Qformer(query_embeds=model.query_tokens.expand(2, -1, -1),
                                encoder_hidden_states=reference).last_hidden_state
        assert torch.equal(model._encoder_features(images, through_qformer=False), reference)
        assert torch.equal(model.encode_image(images), model.llama_proj(queries))
    assert {f"visual_encoder.{key}" for key in eva.state_dict()} == \
        {key for key in model.state_dict() if key.startswith("visual_encoder.")}


def write_config(tmp_path, shapes_dir, tower, base="train_configs/tiny_stage2.yaml", size=32, **model_keys):
    """A tiny config (its tiny LLM, Q-Former or concat projector) seeing through `tower`, images `size` pixels."""
    config = OmegaConf.load(REPO / base)
    for key in ("vit_config", "image_size"):
        config.model.pop(key, None)
    config.model.update({"vit_model": str(tower), "tokenizer": f"{shapes_dir}/tokenizer", "ckpt": None, **model_keys})
    config.datasets = {"sharegpt4v": {
        "batch_size": 2, "build_info": {"ann_path": f"{shapes_dir}/train.json", "image_path": f"{shapes_dir}/images"},
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": size}}}}
    config.run.output_dir = str(tmp_path / "out")
    path = tmp_path / "config.yaml"
    OmegaConf.save(config, path)
    return path


def built(path, *options):
    config = load_config(path, list(options))
    torch.manual_seed(0)
    return registry.get("model", config.model.arch).from_config(config.model), config


def batch_of(model, size=32):
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    samples = [{"id": str(i), "image": image, "turns": [(USER, "What color is the circle?"), (ASSISTANT, answer)]}
               for i, (image, answer) in enumerate(zip(images, ("red", "blue")))]
    return collator_for(model)(samples)


PROJECTORS = {"qformer": "train_configs/tiny_stage2.yaml", "concat": "train_configs/tiny_v2.yaml"}


@pytest.mark.parametrize("projector", PROJECTORS)
@pytest.mark.parametrize("name", ["clip", "siglip", "dinov2", "timm"])
def test_both_projectors_run_a_forward_and_loss(tmp_path, shapes_dir, towers, name, projector):
    tower = "timm:vit_small_patch14_dinov2" if name == "timm" else towers[name]
    extra = {"image_size": 32, "vit_config": OmegaConf.create(TIMM_DINOV2)} if name == "timm" else {}
    model, config = built(write_config(tmp_path, shapes_dir, tower, PROJECTORS[projector], **extra))
    llm_width = model.llama_model.config.hidden_size
    if projector == "qformer":
        assert model.Qformer.config.encoder_hidden_size == 32 and model.num_image_tokens == 8
    else:
        assert model.llama_proj.in_features == 4 * 32 and model.num_image_tokens == 16 // 4  # CLS left out
    assert model.encode_image(PIXELS).shape == (2, model.num_image_tokens, llm_width)
    loss = model(batch_of(model))["loss"]
    assert torch.isfinite(loss)


def test_a_training_step_moves_the_projector_and_not_the_frozen_tower(tmp_path, shapes_dir, towers):
    path = write_config(tmp_path, shapes_dir, towers["clip"], vit_layer=-2)
    model, _ = built(path, "model.parts.vision_encoder.mode=frozen", "model.parts.llm.mode=frozen")
    model.train()
    assert not model.visual_encoder.training and model.llama_proj.training
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(batch_of(model))["loss"].backward()
    optimizer.step()
    after = model.state_dict()
    tower_keys = [key for key in after if key.startswith("visual_encoder.")]
    assert tower_keys and all(torch.equal(before[key], after[key]) for key in tower_keys)
    assert all(p.grad is None for p in model.visual_encoder.parameters())
    assert not torch.equal(before["llama_proj.weight"], after["llama_proj.weight"])
    # the tower's weights are its folder's: a checkpoint does not copy them
    assert not any(key.startswith("visual_encoder.") for key in model.checkpoint_weights())


def test_processors_take_the_towers_normalisation(tmp_path, shapes_dir, towers):
    config = load_config(write_config(tmp_path, shapes_dir, towers["siglip"]))
    assert config.datasets.sharegpt4v.vis_processor.train.mean == SIGLIP_MEAN
    config.datasets = {}  # no data set: chat's own transform
    normalize = image_processor_for(config).transform.transforms[-1]
    assert list(normalize.mean) == SIGLIP_MEAN and list(normalize.std) == SIGLIP_STD
    assert image_processor_for(config).image_size == 32


def test_the_eva_defaults_leave_with_the_eva_tower(tmp_path, shapes_dir, towers):
    """The model defaults fetch EVA's file and BLIP-2's Q-Former, at EVA's size: not for another tower."""
    config = OmegaConf.load(write_config(tmp_path, shapes_dir, towers["clip"]))
    for key in ("vit_weights", "q_former_model"):
        config.model.pop(key)
    OmegaConf.save(config, tmp_path / "plain.yaml")
    model = load_config(tmp_path / "plain.yaml").model
    assert model.vit_weights is None and model.q_former_model is None and model.image_size is None
    assert [setting.key for setting in model_file_settings(model)][-1] == "model.vit_model"  # a hub id is fetched


def test_a_hub_id_is_fetched_as_a_folder_when_the_config_loads(tmp_path, shapes_dir, towers, local_hub):
    local_hub.add_repo("tiny-org/tiny-siglip", towers["siglip"])
    path = write_config(tmp_path, shapes_dir, "tiny-org/tiny-siglip")
    planned = load_config(path, for_planning=True)  # a plan reads the two json files alone
    assert planned.model.vit_model == "tiny-org/tiny-siglip" and image_token_count(planned.model) == 8
    assert local_hub.asked("preprocessor_config.json") and not local_hub.asked("model.safetensors")
    config = load_config(path)
    folder = Path(config.model.vit_model)
    assert (folder / "preprocessor_config.json").is_file() and (folder / "model.safetensors").is_file()
    assert config.datasets.sharegpt4v.vis_processor.train.mean == SIGLIP_MEAN


def test_extra_encoders_mix_with_a_new_tower(tmp_path, shapes_dir, towers):
    extra = f"model.extra_encoders=[{{timm_model: vit_small_patch14_dinov2, timm_config: {TIMM_DINOV2}}}]"
    model, _ = built(write_config(tmp_path, shapes_dir, towers["siglip"], PROJECTORS["concat"]), extra)
    features = model._encoder_features(PIXELS, through_qformer=False)
    assert features.shape == (2, 16, 32 + 32)  # SigLIP has no CLS: no slot for one either
    torch.testing.assert_close(model.extra_encoders[0].pixel_scale.flatten(), torch.tensor(SIGLIP_STD) / torch.tensor(IMAGENET_STD))
    assert torch.isfinite(model(batch_of(model))["loss"])


@pytest.mark.parametrize("main, extra", [("siglip", "dinov2_reg"), ("clip", "siglip")])
def test_a_transformers_folder_mixes_as_an_extra_encoder(tmp_path, shapes_dir, towers, main, extra):
    """Its folder's weights, its processor's size and normalisation, its prefix tokens (CLS, registers)
    pooled into the main tower's prefix slots: DINOv2 with registers beside SigLIP (no CLS), SigLIP (no
    prefix) beside CLIP's CLS."""
    option = f"model.extra_encoders=[{{vision_model: {towers[extra]}}}]"
    model, _ = built(write_config(tmp_path, shapes_dir, towers[main], PROJECTORS["concat"]), option)
    encoder = model.extra_encoders[0]
    reference = REFERENCE[extra].from_pretrained(towers[extra])
    own = encoder.model.tower.model
    torch.testing.assert_close(own.embeddings.patch_embeddings.projection.weight if extra != "siglip" else
                               own.embeddings.patch_embedding.weight,
                               reference.embeddings.patch_embeddings.projection.weight if extra != "siglip" else
                               reference.embeddings.patch_embedding.weight)
    main_mean, main_std = (SIGLIP_MEAN, SIGLIP_STD) if main == "siglip" else (CLIP_MEAN, CLIP_STD)
    extra_mean, extra_std = (IMAGENET_MEAN, IMAGENET_STD) if extra.startswith("dinov2") else (SIGLIP_MEAN, SIGLIP_STD)
    torch.testing.assert_close(encoder.pixel_scale.flatten(), torch.tensor(main_std) / torch.tensor(extra_std))
    with torch.no_grad():
        mixed = encoder.eval()(PIXELS, grid=4, prefix_tokens=OWN_PREFIX[main])  # [2, p + 16, 32]
        pixels = (PIXELS * torch.tensor(main_std).view(1, 3, 1, 1) + torch.tensor(main_mean).view(1, 3, 1, 1)
                  - torch.tensor(extra_mean).view(1, 3, 1, 1)) / torch.tensor(extra_std).view(1, 3, 1, 1)
        patches = reference.eval()(pixel_values=pixels).last_hidden_state[:, OWN_PREFIX[extra]:]  # [2, 16, 32]
        pooled = patches.mean(dim=1, keepdim=True).expand(-1, OWN_PREFIX[main], -1)
        expected = encoder.norm(torch.cat([pooled, patches], dim=1))
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-4)
    assert model._encoder_features(PIXELS, through_qformer=False).shape[-1] == 32 + 32
    assert torch.isfinite(model(batch_of(model))["loss"])
    assert not any(key.startswith("extra_encoders.") for key in model.checkpoint_weights())  # frozen, from its folder
    plan_config = load_config(write_config(tmp_path, shapes_dir, towers[main], PROJECTORS["concat"]), [option],
                              for_planning=True)
    planned, _ = planned_model(plan_config.model, llm_config_of(plan_config.model), torch.float16)
    assert sum(p.numel() for p in planned.extra_encoders.parameters()) == sum(p.numel() for p in encoder.parameters())


def test_what_an_extra_folder_encoder_refuses(tmp_path, shapes_dir, towers):
    path = write_config(tmp_path, shapes_dir, towers["siglip"], PROJECTORS["concat"])
    for entry, key, message in (
            (f"{{vision_model: {towers['clip']}, timm_model: convnext_atto}}", "timm_model", "set one of"),
            ("{}", "timm_model", "set one of"),
            (f"{{vision_model: {tmp_path / 'nowhere'}}}", "vision_model", "does not exist"),
            (f"{{vision_model: {towers['clip']}, weights: {towers['clip'] / 'model.safetensors'}}}", "weights",
             "is for a timm_model")):
        with pytest.raises(ConfigError, match=message) as error:
            load_config(path, [f"model.extra_encoders=[{entry}]"])
        assert error.value.key == f"model.extra_encoders.0.{key}"


def test_a_plan_builds_a_folder_tower_on_the_meta_device(tmp_path, shapes_dir, towers):
    path = write_config(tmp_path, shapes_dir, towers["clip"], vit_layer=-2, use_grad_checkpoint=True)
    config = load_config(path, for_planning=True)
    model, _ = planned_model(config.model, llm_config_of(config.model), torch.float16)
    assert next(model.visual_encoder.parameters()).is_meta and model.visual_encoder.sequence_length == 17
    tower, _, _ = build_vision_side(config.model)
    counted = sum(p.numel() for p in model.visual_encoder.parameters())
    assert counted == sum(p.numel() for p in tower.parameters())  # one block, no post_layernorm, as built
    plan = make_plan(config, "clip", training=True)
    assert plan.stats.parts["vision_encoder"].frozen == counted and plan.stats.vision.depth == 1


@pytest.mark.parametrize("keys, key, message", [
    ({"image_size": 24}, "model.image_size", "joins 4 neighbouring patches, but .* gives 3 x 3 = 9"),
    ({"vit_layer": -3}, "model.vit_layer", "has 2 blocks"),
    ({"vit_config": {"depth": 1}}, "model.vit_config", "takes its shape and weights from its folder"),
    ({"vit_weights": "eva.pth"}, "model.vit_weights", "takes its shape and weights from its folder"),
])
def test_what_a_folder_tower_refuses_before_any_model_is_built(tmp_path, shapes_dir, towers, keys, key, message):
    path = write_config(tmp_path, shapes_dir, towers["clip"], PROJECTORS["concat"], size=keys.get("image_size", 32),
                        **keys)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert error.value.key == key


def test_what_else_is_refused_by_name(tmp_path, shapes_dir, towers):
    (tmp_path / "naflex").mkdir()
    (tmp_path / "naflex" / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    cases = [(tmp_path / "naflex", {}, "model.vit_model", "NaFlex"),
             (tmp_path / "nowhere", {}, "model.vit_model", "does not exist"),
             (tmp_path / "naflex" / "..", {}, "model.vit_model", "neither a preset"),
             ("timm:no_such_vit", {}, "model.vit_model", "not a timm architecture"),
             ("eva_clip_g", {"vit_layer": -2, "vit_config": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}},
              "model.vit_layer", "preset"),
             (towers["clip"], {"q_former_model": "blip2.pth"}, "model.q_former_model", "cross-attends")]
    for tower, keys, key, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            load_config(write_config(tmp_path, shapes_dir, tower, **keys))
        assert error.value.key == key
    path = write_config(tmp_path, shapes_dir, towers["siglip"])
    with pytest.raises(ConfigError, match="normalised with mean") as error:
        load_config(path, ["datasets.sharegpt4v.vis_processor.train.mean=[0.1,0.2,0.3]"])
    assert error.value.key == "datasets.sharegpt4v.vis_processor.train.mean"
    assert image_token_count(model_cfg(towers["clip"], has_qformer=False)) == 4
