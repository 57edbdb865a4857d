"""Checkpoints: atomic folders, newest-first resume, safe loading, shape errors that name the key."""
import os
import pickle

import pytest
import torch
from torch import nn

from minigpt.common.checkpoint import latest_checkpoint, load_training_state, read_weights, save_checkpoint
from minigpt.conversation.collator import collator_for
from minigpt.models.weights import load_weights


class Tiny(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.llama_proj = nn.Linear(width, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_save_then_load_restores_weights_and_state(tmp_path):
    model = Tiny()
    path = save_checkpoint(tmp_path, 7, weights(model), {"step": 7, "optimizer": {"lr": 0.1}})
    assert path.name == "checkpoint_0000007" and (path / "model.safetensors").exists()
    other = Tiny()
    report = load_weights(other, path)
    assert report == {"unexpected": [], "missing_trainable": []}
    assert torch.equal(other.llama_proj.weight, model.llama_proj.weight)
    assert load_training_state(path)["step"] == 7


def test_latest_ignores_half_written_folders(tmp_path):
    save_checkpoint(tmp_path, 5, weights(Tiny()), {"step": 5})
    save_checkpoint(tmp_path, 20, weights(Tiny()), {"step": 20})
    (tmp_path / ".checkpoint_0000030.tmp123").mkdir()  # what a kill during a save leaves behind
    assert latest_checkpoint(tmp_path).name == "checkpoint_0000020"
    assert set(read_weights(tmp_path)) == {"llama_proj.weight", "llama_proj.bias"}  # a run folder: its newest


def test_shape_mismatch_names_the_key(tmp_path):
    path = save_checkpoint(tmp_path, 1, weights(Tiny(width=4)), {})
    with pytest.raises(ValueError, match=r"llama_proj.weight.*\(3, 4\).*\(3, 5\)"):
        load_weights(Tiny(width=5), path)


def test_a_checkpoint_that_matches_nothing_is_refused(tmp_path):
    """A checkpoint saved with a prefix (or of another model) would otherwise load nothing, silently."""
    prefixed = {f"module.{name}": value for name, value in weights(Tiny()).items()}
    path = save_checkpoint(tmp_path, 1, prefixed, {})
    with pytest.raises(ValueError, match=r"none of its 2 weights is a parameter of this model \(first: module.llama_proj"):
        load_weights(Tiny(), path)
    path = save_checkpoint(tmp_path, 2, {**weights(Tiny()), "extra.weight": torch.zeros(2, 2)}, {})
    assert load_weights(Tiny(), path)["unexpected"] == ["extra.weight"]  # something loaded: reported, not fatal


def test_released_pth_layout_loads_weights_only(tmp_path):
    model = Tiny()
    torch.save({"model": weights(model), "epoch": 3}, tmp_path / "minigpt4.pth")
    other = Tiny()
    load_weights(other, tmp_path / "minigpt4.pth")
    assert torch.equal(other.llama_proj.bias, model.llama_proj.bias)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    with open(path, "wb") as file:
        pickle.dump({"model": Exploit(marker)}, file)
    with pytest.raises(pickle.UnpicklingError, match="evil.pth: refused"):
        read_weights(path)
    assert not marker.exists()
    with open(path, "rb") as file:  # the file does run code when unpickled without weights_only
        pickle.load(file)
    assert marker.exists()


def test_export_merges_the_llm_lora_and_gives_the_same_logits(shapes_dir, tmp_path):
    """A LoRA model saved by training, exported by `minigpt export`, loads as a plain model."""
    from conftest import REPO, run_script
    from minigpt.common import registry
    from minigpt.config.loader import load_config
    from minigpt.conversation.template import ASSISTANT, USER
    from minigpt.inference.loading import load_for_inference

    options = [f"model.tokenizer={shapes_dir}/tokenizer", "model.lora_r=8", "model.parts.llm.mode=lora"]
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml", options + ["model.ckpt=null"], for_training=False)
    torch.manual_seed(0)
    model = registry.get("model", "minigpt_v2").from_config(config.model).eval()
    size = config.model.image_size
    samples = [{"id": "0", "image": torch.randn(3, size, size), "task": "vqa",
                "turns": [(USER, "What colors are in the image?"), (ASSISTANT, "red and blue")]}]
    batch = collator_for(model)(samples)
    with torch.no_grad():
        base = model(batch, with_loss=False)["logits"]
    for key, param in model.named_parameters():
        if "lora_B" in key:  # zero at init, which would make the merge trivially exact
            nn.init.normal_(param, std=0.05)
    save_checkpoint(tmp_path / "run", 1, model.checkpoint_weights(), {"step": 1})
    run_script(["-m", "minigpt", "export", "--cfg-path", "eval_configs/tiny_v2_eval.yaml", "--options", *options,
                f"model.ckpt={tmp_path}/run", "--out", str(tmp_path / "merged")])

    exported = load_config(tmp_path / "merged" / "config.yaml", [], for_training=False)
    assert exported.model.parts.llm.mode == "frozen" and exported.model.lora_r == 0
    merged = load_for_inference(exported, torch.device("cpu"))
    assert not any("lora" in key for key in merged.state_dict())
    with torch.no_grad():
        expected, got = model(batch, with_loss=False)["logits"], merged(batch, with_loss=False)["logits"]
    assert (expected - got).abs().max() < 1e-5
    assert (expected - base).abs().max() > 1e-2  # the LoRA does change the logits


def test_peft_export_opens_with_peft_on_the_base_llm_and_loads_back_as_model_llm_adapter(shapes_dir, tmp_path):
    """`minigpt export --format peft`: PeftModel.from_pretrained(base LLM folder, adapter folder) gives our
    LLM's logits; the exported config (model.llm_adapter) rebuilds the whole model with the same logits;
    an adapter whose rank or base model differs from the config is refused by name."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from conftest import REPO, run_script
    from minigpt.common import registry
    from minigpt.common.errors import ConfigError
    from minigpt.config.loader import load_config
    from minigpt.conversation.template import ASSISTANT, USER
    from minigpt.inference.loading import load_for_inference

    options = [f"model.tokenizer={shapes_dir}/tokenizer", "model.lora_r=8", "model.parts.llm.mode=lora"]
    config = load_config(REPO / "eval_configs/tiny_v2_eval.yaml", options + ["model.ckpt=null"], for_training=False)
    torch.manual_seed(0)
    model = registry.get("model", "minigpt_v2").from_config(config.model).eval()
    for key, param in model.named_parameters():
        if "lora_B" in key:  # zero at init, which would make any adapter look right
            nn.init.normal_(param, std=0.05)
    save_checkpoint(tmp_path / "run", 1, model.checkpoint_weights(), {"step": 1})
    size = config.model.image_size
    batch = collator_for(model)([{"id": "0", "image": torch.randn(3, size, size), "task": "vqa",
                                  "turns": [(USER, "What colors are in the image?"), (ASSISTANT, "red and blue")]}])
    input_ids = torch.tensor([[1, 5, 9, 30, 7, 2]])
    with torch.no_grad():
        expected, expected_llm = model(batch, with_loss=False)["logits"], model.llama_model(input_ids=input_ids).logits
    run_script(["-m", "minigpt", "export", "--cfg-path", "eval_configs/tiny_v2_eval.yaml", "--options", *options,
                f"model.ckpt={tmp_path}/run", "--out", str(tmp_path / "peft"), "--format", "peft"])

    folder = tmp_path / "peft"
    assert {path.name for path in (folder / "llm_adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    base = AutoModelForCausalLM.from_pretrained(folder / "base_llm")
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(base, folder / "llm_adapter").eval()(input_ids=input_ids).logits
    assert (theirs - expected_llm).abs().max() < 1e-5
    reloaded = load_for_inference(load_config(folder / "config.yaml", [], for_training=False), torch.device("cpu"))
    with torch.no_grad():
        assert (reloaded(batch, with_loss=False)["logits"] - expected).abs().max() < 1e-5

    adapter_config = json.loads((folder / "llm_adapter" / "adapter_config.json").read_text())
    other = tmp_path / "other_base"
    (other / "llm_adapter").mkdir(parents=True)
    (other / "llm_adapter" / "adapter_model.safetensors").write_bytes(
        (folder / "llm_adapter" / "adapter_model.safetensors").read_bytes())
    for change, message in (({"r": 4}, "r is 4 there but model.lora_r is 8"),
                            ({"base_model_name_or_path": "meta-llama/Llama-2-7b-chat-hf"},
                             "an adapter for base model 'meta-llama/Llama-2-7b-chat-hf', but model.llama_model is")):
        (other / "llm_adapter" / "adapter_config.json").write_text(json.dumps({**adapter_config, **change}))
        with pytest.raises(ConfigError, match=f"model.llm_adapter.*{message}"):
            load_config(folder / "config.yaml", [f"model.llm_adapter={other / 'llm_adapter'}"], for_training=False)
