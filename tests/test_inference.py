"""One model across several GPUs: the device map accelerate plans for the LLM (whole decoder layers,
in order, within each GPU's memory), a dispatched LLM answering as the whole one, and the clear
refusals where a split cannot run. Plans are made for two pretended GPUs (accelerate only counts them);
the dispatch runs on the CPU with one layer offloaded to disk, through the same accelerate hooks that
carry activations between GPUs."""
import pytest
import torch

from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.inference.loading import load_for_inference, plan_device_map, split_llm


@pytest.fixture
def llm(shapes_dir):
    config = load_config("train_configs/tiny_v2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer",
                                                        "model.llama_config.num_hidden_layers=4"], for_training=False)
    return registry.get("model", config.model.arch).from_config(config.model).llama_model


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def half_precision_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * 2 for p in module.parameters())


def test_sequential_fills_the_first_gpu_then_the_next(llm, two_gpus):
    size = half_precision_bytes(llm)
    device_map = plan_device_map(llm, "sequential", {0: int(size * 0.8), 1: int(size * 0.8)})
    layers = [device_map.get(f"model.layers.{i}") for i in range(4)]
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == 1
    assert layers == sorted(layers) and set(layers) == {0, 1}  # whole layers, in order, on both GPUs
    assert plan_device_map(llm, "sequential", {0: size * 4, 1: size * 4}) == {"": 0}  # fits on the first


def test_auto_balances_the_layers(llm, two_gpus):
    size = half_precision_bytes(llm)
    device_map = plan_device_map(llm, "auto", {0: size * 4, 1: size * 4})
    layers = [device_map[f"model.layers.{i}"] for i in range(4)]
    assert layers == [0, 0, 1, 1]


def test_refusals_say_why(llm, two_gpus, shapes_dir):
    size = half_precision_bytes(llm)
    with pytest.raises(ValueError, match="does not fit on the GPUs' memory"):
        plan_device_map(llm, "sequential", {0: size // 4, 1: size // 4})
    with pytest.raises(ValueError, match="choose auto or sequential"):
        plan_device_map(llm, "balanced_low_0")

    config = load_config("eval_configs/tiny_v2_eval.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"],
                         for_training=False)
    with pytest.raises(ValueError, match="low_resource .* choose one of the two"):
        load_for_inference(config, torch.device("cuda", 0), low_resource=True, device_map="auto")
    with pytest.raises(ValueError, match="the vision side is on cpu"):
        load_for_inference(config, torch.device("cpu"), device_map="auto")


def test_without_gpus_a_split_is_refused(shapes_dir):
    if torch.cuda.is_available():
        pytest.skip("GPUs are visible here")
    config = load_config("eval_configs/tiny_v2_eval.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"],
                         for_training=False)
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        load_for_inference(config, torch.device("cpu"), device_map="auto")


def test_a_dispatched_llm_answers_as_the_whole_one(shapes_dir, tmp_path):
    config = load_config("eval_configs/tiny_v2_eval.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"],
                         for_training=False)
    torch.manual_seed(0)
    model = load_for_inference(config, torch.device("cpu"))
    sample = {"id": "q", "image": torch.randn(3, 32, 32), "task": "vqa",
              "turns": [("user", "Which colors do you see?")]}
    batch = collator_for(model).generation_batch([sample])
    expected = model.generate(batch, max_new_tokens=8, repetition_penalty=1.0)

    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu",
                  "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model.llama_model = split_llm(model.llama_model, device_map, offload_dir=str(tmp_path))
    assert model.llama_model.hf_device_map == device_map
    assert model.generate(batch, max_new_tokens=8, repetition_penalty=1.0) == expected
