"""Released weights: state dicts in the real layouts (EVA ViT-g file, BLIP-2 Q-Former checkpoint, MiniGPT-4
and MiniGPT-v2 releases), built here at tiny shapes, load into tiny models with nothing missing."""
import pytest
import torch

from conftest import REPO, stage2_options
from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.models.llm import build_llm
from minigpt.models.pretrained import load_blip2_qformer, load_eva_vit
from minigpt.models.vision_encoder import build_vision_encoder
from minigpt.models.weights import load_weights

TINY_VIT = dict(patch_size=14, embed_dim=32, depth=2, num_heads=2)


def eva_file(tmp_path, image_size: int, depth: int, prefix: str = "") -> tuple:
    """An EVA encoder of `depth` blocks saved as a plain state dict, as eva_vit_g.pth is."""
    torch.manual_seed(0)
    source, _ = build_vision_encoder("eva_clip_g", image_size, vit_config={**TINY_VIT, "depth": depth})
    path = tmp_path / "eva_vit_g.pth"
    torch.save({prefix + key: value for key, value in source.state_dict().items()}, path)
    return source, path


def test_eva_file_loads_first_blocks_and_resamples_positions(tmp_path):
    source, path = eva_file(tmp_path, image_size=28, depth=3)  # 2x2 patches, one block more than ours
    torch.manual_seed(1)
    encoder, _ = build_vision_encoder("eva_clip_g", 56, vit_config=TINY_VIT)  # 4x4 patches
    report = load_eva_vit(encoder, path)
    assert not report.missing and len(report.resampled) == 1 and "(1, 5, 32) -> (1, 17, 32)" in report.resampled[0]
    assert report.unused and all(key.startswith("blocks.2.") for key in report.unused)
    for key, value in encoder.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(value, source.state_dict()[key]), key
    assert torch.equal(encoder.pos_embed[:, 0], source.pos_embed[:, 0])  # CLS position kept
    assert "blocks.N.attn.qkv.weight" in str(report)


def test_eva_file_at_its_own_size_gives_the_same_features(tmp_path):
    source, path = eva_file(tmp_path, image_size=28, depth=2, prefix="visual.")  # EVA-CLIP layout
    encoder, _ = build_vision_encoder("eva_clip_g", 28, vit_config=TINY_VIT)
    report = load_eva_vit(encoder, path)
    assert not report.missing and not report.unused and not report.resampled
    images = torch.randn(2, 3, 28, 28)
    assert torch.equal(encoder.forward_features(images), source.eval().forward_features(images))


def test_eva_shape_mismatch_and_missing_weights_name_the_key(tmp_path):
    _, path = eva_file(tmp_path, image_size=28, depth=2)
    wider, _ = build_vision_encoder("eva_clip_g", 28, vit_config={**TINY_VIT, "embed_dim": 48, "num_heads": 3})
    with pytest.raises(ValueError, match=r"eva_vit_g.pth: .*shape"):
        load_eva_vit(wider, path)
    weights = torch.load(path, weights_only=True)
    del weights["blocks.1.mlp.fc2.weight"]
    torch.save(weights, path)
    encoder, _ = build_vision_encoder("eva_clip_g", 28, vit_config=TINY_VIT)
    with pytest.raises(ValueError, match=r"missing 1 .*blocks.N.mlp.fc2.weight"):
        load_eva_vit(encoder, path)


def lavis_qformer_name(key: str) -> str:
    """Our (transformers) Q-Former key as LAVIS's BertLMHeadModel names it."""
    key = key.replace("Qformer.", "Qformer.bert.").replace("Qformer.bert.layernorm.", "Qformer.bert.embeddings.LayerNorm.")
    return key.replace(".attention.attention.", ".attention.self.").replace(".crossattention.attention.", ".crossattention.self.")


def minigpt4(shapes_dir, *options):
    config = load_config(REPO / "train_configs/tiny_stage2.yaml", stage2_options(shapes_dir) + ["model.ckpt=null", *options])
    return registry.get("model", config.model.arch).from_config(config.model)


def test_blip2_checkpoint_loads_qformer_query_tokens_and_ln_vision(shapes_dir, tmp_path):
    torch.manual_seed(0)
    source = minigpt4(shapes_dir)
    released = {lavis_qformer_name(k): v for k, v in source.state_dict().items() if k.startswith("Qformer.")}
    released.update({"query_tokens": source.query_tokens.detach(), "ln_vision.weight": torch.rand(64),
                     "ln_vision.bias": torch.rand(64)})
    extras = {"Qformer.cls.predictions.bias": torch.zeros(10), "Qformer.bert.embeddings.word_embeddings.weight": torch.zeros(10, 64),
              "Qformer.bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(128, 64),
              "Qformer.bert.encoder.layer.0.output.LayerNorm.weight": torch.zeros(64),
              "vision_proj.weight": torch.zeros(8, 64), "temp": torch.tensor(0.07), "visual_encoder.cls_token": torch.zeros(1, 1, 64)}
    torch.save({"model": {**released, **extras}}, tmp_path / "blip2_pretrained.pth")
    torch.manual_seed(1)
    model = minigpt4(shapes_dir)
    report = load_blip2_qformer(model, tmp_path / "blip2_pretrained.pth")
    assert not report.missing and sorted(report.unused) == sorted(extras)
    for key, value in source.Qformer.state_dict().items():
        assert torch.equal(model.Qformer.state_dict()[key], value), key
    assert torch.equal(model.query_tokens, source.query_tokens)
    assert torch.equal(model.ln_vision.weight, released["ln_vision.weight"])

    released["query_tokens"] = torch.zeros(1, 32, 64)  # the real 32 queries against num_query_token 8
    torch.save({"model": released}, tmp_path / "blip2_pretrained.pth")
    with pytest.raises(ValueError, match=r"query_tokens: shape \(1, 32, 64\)"):
        load_blip2_qformer(model, tmp_path / "blip2_pretrained.pth")


def test_released_minigpt4_stage2_checkpoint_loads_the_projector(shapes_dir, tmp_path):
    """The released stage-2 .pth holds {"model": {llama_proj.weight, llama_proj.bias}} and nothing else."""
    model = minigpt4(shapes_dir, "model.parts.qformer.mode=frozen", "model.parts.llm.mode=frozen")
    projector = {"llama_proj.weight": torch.randn_like(model.llama_proj.weight), "llama_proj.bias": torch.randn_like(model.llama_proj.bias)}
    torch.save({"model": projector, "optimizer": {}, "epoch": 4}, tmp_path / "pretrained_minigpt4_7b.pth")
    report = load_weights(model, tmp_path / "pretrained_minigpt4_7b.pth")
    assert report == {"unexpected": [], "missing_trainable": []}
    assert torch.equal(model.llama_proj.weight, projector["llama_proj.weight"])


def test_released_minigpt_v2_checkpoint_loads_projector_and_peft_0_2_lora_keys(shapes_dir, tmp_path):
    config = load_config(REPO / "train_configs/tiny_v2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.lora_r=8",
                                                                "model.parts.llm.mode=lora", "model.parts.vision_encoder.mode=frozen"],
                         for_training=False)
    model = registry.get("model", "minigpt_v2").from_config(config.model)
    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    # peft 0.2.0 wrote LoRA keys without the adapter name: ...q_proj.lora_A.weight
    released = {k.replace(".default.", "."): torch.randn_like(p) for k, p in trainable.items()}
    assert any(k.endswith("q_proj.lora_A.weight") for k in released) and "llama_proj.weight" in released
    torch.save({"model": released}, tmp_path / "minigptv2_checkpoint.pth")
    report = load_weights(model, tmp_path / "minigptv2_checkpoint.pth")
    assert report == {"unexpected": [], "missing_trainable": []}
    for key, param in trainable.items():
        assert torch.equal(param, released[key.replace(".default.", ".")]), key


def test_config_paths_load_eva_and_blip2_weights_and_keep_them_out_of_checkpoints(shapes_dir, tmp_path):
    source = minigpt4(shapes_dir)
    torch.save(source.visual_encoder.state_dict(), tmp_path / "eva_vit_g.pth")
    released = {lavis_qformer_name(k): v for k, v in source.state_dict().items() if k.startswith("Qformer.")}
    released.update({"query_tokens": source.query_tokens.detach(), "ln_vision.weight": source.ln_vision.weight.detach(),
                     "ln_vision.bias": source.ln_vision.bias.detach()})
    torch.save({"model": released}, tmp_path / "blip2.pth")
    torch.manual_seed(5)
    model = minigpt4(shapes_dir, f"model.vit_weights={tmp_path}/eva_vit_g.pth", f"model.q_former_model={tmp_path}/blip2.pth",
                     "model.parts.qformer.mode=frozen")
    for key, value in source.state_dict().items():
        if key.startswith(("visual_encoder.", "Qformer.", "query_tokens", "ln_vision.")):
            assert torch.equal(model.state_dict()[key], value), key
    saved = model.checkpoint_weights()
    assert not any(key.startswith(("visual_encoder.", "Qformer.", "query_tokens", "ln_vision.")) for key in saved)
    assert "llama_proj.weight" in saved


TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)


def llama_folder(shapes_dir, folder):
    """A Llama folder as Llama-2 releases ship it: config.json, the tokenizer, and sharded weights with an index."""
    torch.manual_seed(0)
    source, tokenizer = build_llm(None, TINY_LLAMA, f"{shapes_dir}/tokenizer")
    source.save_pretrained(folder, max_shard_size="20KB")
    tokenizer.save_pretrained(folder)
    return source


def edit_shard(folder, edit) -> None:
    """Apply `edit` to the weights of the shard that holds model.layers.1.mlp.up_proj.weight."""
    import json

    from safetensors.torch import load_file, save_file

    shard = folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    weights = load_file(shard)
    edit(weights)
    save_file(weights, shard, metadata={"format": "pt"})


def test_llama_folder_loads_with_a_report_and_same_logits(shapes_dir, tmp_path, capsys):
    source = llama_folder(shapes_dir, tmp_path / "llama")
    assert len(list((tmp_path / "llama").glob("model-*.safetensors"))) > 1
    model, _ = build_llm(str(tmp_path / "llama"), None, None)
    report = capsys.readouterr().err
    assert f"{tmp_path / 'llama'}: {len(source.state_dict())} tensors loaded" in report and "missing" not in report
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, source(ids).logits)


def test_llama_pickle_folder_loads_too(shapes_dir, tmp_path):
    """Vicuna v0 folders hold pytorch_model*.bin pickles: transformers reads them with weights_only."""
    from safetensors.torch import load_file

    folder = tmp_path / "vicuna"
    source = llama_folder(shapes_dir, folder)
    weights = {}
    for shard in folder.glob("model*.safetensors"):
        weights.update(load_file(shard))
        shard.unlink()
    (folder / "model.safetensors.index.json").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    model, _ = build_llm(str(tmp_path / "vicuna"), None, None)
    assert torch.equal(model.lm_head.weight, source.lm_head.weight)


def test_llama_folder_missing_or_reshaped_weight_raises_naming_the_key(shapes_dir, tmp_path, capsys):
    folder = tmp_path / "llama"
    llama_folder(shapes_dir, folder)
    edit_shard(folder, lambda weights: weights.update({"model.extra_head.weight": torch.zeros(2)}))
    build_llm(str(folder), None, None)
    assert "unused (1): model.extra_head.weight" in capsys.readouterr().err  # reported, not fatal
    edit_shard(folder, lambda weights: weights.update({"model.layers.1.mlp.up_proj.weight": torch.zeros(65, 32)}))
    with pytest.raises(ValueError, match=r"llama: model.layers.1.mlp.up_proj.weight: shape \(65, 32\) in the folder, \(64, 32\)"):
        build_llm(str(folder), None, None)
    edit_shard(folder, lambda weights: weights.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"llama: missing 1 weights .*model.layers.N.mlp.up_proj.weight"):
        build_llm(str(folder), None, None)


def test_llama_folder_code_runs_only_when_the_config_trusts_it(shapes_dir, tmp_path):
    import json

    folder = tmp_path / "custom"
    llama_folder(shapes_dir, folder)
    (folder / "configuration_custom.py").write_text(
        "from transformers import LlamaConfig\nclass CustomConfig(LlamaConfig):\n    model_type = 'custom_llama'\n")
    (folder / "modeling_custom.py").write_text(  # importing it leaves a file behind, so we can tell it ran
        f"open({str(tmp_path / 'code_ran')!r}, 'w').close()\n"
        "from transformers import LlamaForCausalLM\nfrom .configuration_custom import CustomConfig\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom_llama", architectures=["CustomForCausalLM"],
                  auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="custom needs the Python code it ships.*model.trust_remote_code: true"):
        build_llm(str(folder), None, None)
    assert not (tmp_path / "code_ran").exists()
    model, _ = build_llm(str(folder), None, None, trust_remote_code=True)
    assert type(model).__name__ == "CustomForCausalLM" and (tmp_path / "code_ran").exists()


def test_weight_urls_not_fetched_and_missing_files_are_refused_before_building(shapes_dir, tmp_path, monkeypatch):
    from minigpt.common.errors import ConfigError

    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIGPT_OFFLINE", "1")  # (tests/test_fetch.py fetches URLs, from a local server)
    url = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
    with pytest.raises(ConfigError, match=f"model.vit_weights: '{url}' is not on this machine and downloads are off"):
        load_config(REPO / "train_configs/tiny_stage2.yaml", stage2_options(shapes_dir) + ["model.ckpt=null", f"model.vit_weights={url}"])
    with pytest.raises(ConfigError, match="model.q_former_model.*does not exist"):
        load_config(REPO / "train_configs/tiny_stage2.yaml", stage2_options(shapes_dir) + ["model.ckpt=null", f"model.q_former_model={tmp_path}/none.pth"])


def test_released_v2_eval_config_chats_with_checkpoint_lora_on_an_8bit_llm(shapes_dir, tmp_path):
    """minigptv2_eval.yaml as shipped (LoRA r 64, low_resource), shrunk: the released checkpoint's LoRA
    and projector load onto the int8 LLM that bitsandbytes quantised from the folder."""
    pytest.importorskip("bitsandbytes")
    from minigpt.inference.loading import load_for_inference

    llama_folder(shapes_dir, tmp_path / "llama")
    tiny = [f"model.llama_model={tmp_path}/llama", "model.vit_weights=null", "model.image_size=56",
            "model.vit_config.patch_size=14", "model.vit_config.embed_dim=32", "model.vit_config.depth=2",
            "model.vit_config.num_heads=2", "datasets.cc_sbu_align.vis_processor.train.image_size=56"]

    def load(*options):
        config = load_config(REPO / "eval_configs/minigptv2_eval.yaml", tiny + list(options), for_training=False)
        return load_for_inference(config, torch.device("cpu"))

    reference = load("model.ckpt=null", "model.low_resource=false")
    torch.manual_seed(3)
    released = {k.replace(".default.", "."): torch.randn_like(p) * 0.1 for k, p in reference.named_parameters() if p.requires_grad}
    released.update({k: p.detach() for k, p in reference.named_parameters() if k.startswith("visual_encoder.")})
    assert any(k.endswith("q_proj.lora_B.weight") for k in released) and "llama_proj.weight" in released
    torch.save({"model": released}, tmp_path / "minigptv2_checkpoint.pth")
    full = load(f"model.ckpt={tmp_path}/minigptv2_checkpoint.pth", "model.low_resource=false")
    low = load(f"model.ckpt={tmp_path}/minigptv2_checkpoint.pth")  # the shipped low_resource: True, 8-bit
    q_proj = low.llama_model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == "Linear8bitLt" and torch.equal(q_proj.lora_B.default.weight,
                                                                             released["llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"])
    assert torch.equal(low.llama_proj.weight, released["llama_proj.weight"])
    batch = collator_for(low).generation_batch([{"id": "q", "image": torch.randn(3, 56, 56), "turns": [("user", "[vqa] what colour?")]}])
    with torch.no_grad():
        expected = full.llama_model(inputs_embeds=full.embed_inputs(batch["input_ids"], batch["image_slots"], batch["images"])).logits
        got = low.llama_model(inputs_embeds=low.embed_inputs(batch["input_ids"], batch["image_slots"], batch["images"])).logits
    assert (expected - got).abs().max() < 0.1 * expected.abs().max()
    without_lora = reference.llama_model(inputs_embeds=full.embed_inputs(batch["input_ids"], batch["image_slots"], batch["images"])).logits
    assert (expected - without_lora).abs().max() > 0.1 * expected.abs().max()  # the LoRA matters, so the check can fail
