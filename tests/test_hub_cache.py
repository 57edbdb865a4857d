"""A model named as on the Hugging Face hub is found in the local cache, offline (tests/test_fetch.py
downloads one)."""
import pytest
import torch

from conftest import REPO
from minigpt.common.errors import ConfigError
from minigpt.config.loader import load_config
from minigpt.inference.loading import load_for_inference


def cache_a_model(cache, repo_id: str, llm, tokenizer) -> None:
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    llm.save_pretrained(repo / "snapshots" / commit)
    tokenizer.save_pretrained(repo / "snapshots" / commit)


def test_a_hub_name_resolves_from_the_local_cache(shapes_dir, tmp_path, monkeypatch):
    options = [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"]
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", options, for_training=False)
    torch.manual_seed(0)
    built = load_for_inference(config, torch.device("cpu"))
    cache_a_model(tmp_path / "hub", "tiny-org/tiny-vicuna", built.llama_model, built.tokenizer)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    named = ["model.llama_model=tiny-org/tiny-vicuna", "model.tokenizer=null", "model.llama_config={}", "model.ckpt=null"]
    model = load_for_inference(load_config(REPO / "eval_configs/tiny_eval.yaml", named, for_training=False),
                               torch.device("cpu"))
    ids = torch.tensor([[1, 4, 8, 15]])
    with torch.no_grad():
        assert torch.allclose(model.llama_model(input_ids=ids).logits, built.llama_model(input_ids=ids).logits)
    with pytest.raises(ConfigError, match="'tiny-org/elsewhere' is not on this machine and downloads are off "
                                          r"\(HF_HUB_OFFLINE=1\); fetch it with: minigpt download tiny-org/elsewhere"):
        load_config(REPO / "eval_configs/tiny_eval.yaml", [*named[1:], "model.llama_model=tiny-org/elsewhere"],
                    for_training=False)
