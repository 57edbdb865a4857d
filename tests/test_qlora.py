"""QLoRA (models/training_model.py): training LoRA on an LLM quantised by bitsandbytes (its CPU backend here),
checkpoints that hold the quantised weights dequantised, resuming, each rank's LLM on its own GPU, and
configs that cannot work refused."""
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, losses, run_script, stage2_options
from minigpt.common import registry
from minigpt.common.checkpoint import save_checkpoint
from minigpt.common.errors import ConfigError
from minigpt.config.loader import load_config
from minigpt.models import training_model

STAGE2 = "train_configs/tiny_stage2.yaml"
Q_PROJ = "llama_model.model.layers.0.self_attn.q_proj"
LORA_Q_PROJ = "llama_model.base_model.model.model.layers.0.self_attn.q_proj"  # under peft's wrapper


@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, 8])
def test_lora_trains_on_the_quantised_llm_and_resumes(shapes_dir, tmp_path, bits):
    config = load_config(REPO / STAGE2, stage2_options(shapes_dir) + ["model.ckpt=null"])
    torch.manual_seed(0)
    start = registry.get("model", config.model.arch).from_config(config.model).checkpoint_weights()
    save_checkpoint(tmp_path / "start", 1, start, {"step": 1})
    options = [*stage2_options(shapes_dir), f"model.ckpt={tmp_path}/start", "model.low_resource=true",
               f"model.low_resource_bits={bits}", "model.parts.llm.mode=lora", "model.lora_r=4", "model.lora_dropout=0.0",
               "run.iters_per_epoch=6", "run.ckpt_freq=3", "run.log_freq=1", "run.warmup_steps=1",
               "datasets.sharegpt4v.batch_size=4", "model.qformer_config.hidden_dropout_prob=0.0"]
    run_script(["train.py", "--cfg-path", STAGE2, "--options", *options, f"run.output_dir={tmp_path / 'run'}"])
    curve = losses(tmp_path / "run")
    assert list(curve) == list(range(1, 7)) and all(0 < loss < 20 for loss in curve.values())

    saved = load_file(tmp_path / "run" / "checkpoint_0000006" / "model.safetensors")
    assert saved[f"{LORA_Q_PROJ}.lora_B.default.weight"].abs().sum() > 0  # the LoRA trained (B starts at zero)
    base = saved[f"{LORA_Q_PROJ}.weight"]  # the quantised weight, saved dequantised: close to the start's, not equal
    assert base.dtype == torch.float32 and base.shape == start[f"{Q_PROJ}.weight"].shape
    error = (base - start[f"{Q_PROJ}.weight"]).abs().max().item()
    assert 0 < error < (0.05 if bits == 4 else 0.01)

    run_script(["train.py", "--cfg-path", STAGE2, "--options", *options, f"run.output_dir={tmp_path / 'resumed'}",
                f"run.resume_ckpt_path={tmp_path}/run/checkpoint_0000003"])
    resumed = losses(tmp_path / "resumed")
    assert list(resumed) == [4, 5, 6]
    assert list(resumed.values()) == pytest.approx([curve[4], curve[5], curve[6]], rel=1e-5)


def test_each_rank_quantises_its_llm_onto_its_own_gpu(shapes_dir, monkeypatch):
    """Under torchrun rank r trains on cuda:r; its quantised LLM must load there too, not on GPU 0."""
    placed = {}

    class Recorder:
        @classmethod
        def from_config(cls, cfg, device, compute_dtype):
            placed.update(device_8bit=cfg.device_8bit, device=device)
            return cls()

    config = load_config(REPO / STAGE2, stage2_options(shapes_dir) + ["model.ckpt=null"])
    monkeypatch.setattr(training_model.registry, "get", lambda kind, name: Recorder)
    training_model.build_for_training(config.model, torch.device("cuda", 3), torch.bfloat16)
    assert placed == {"device_8bit": 3, "device": torch.device("cuda", 3)}


def test_a_quantised_llm_that_would_train_fully_or_under_deepspeed_is_refused(shapes_dir):
    options = stage2_options(shapes_dir) + ["model.ckpt=null", "model.low_resource=true"]
    with pytest.raises(ConfigError, match="model.low_resource: a quantised LLM does not train fully"):
        load_config(REPO / STAGE2, options + ["model.parts.llm.mode=full"])
    with pytest.raises(ConfigError, match="not under DeepSpeed"):
        load_config(REPO / STAGE2, options + ["model.parts.llm.mode=lora", "model.lora_r=4",
                                              "run.deepspeed_config=train_configs/deepspeed/zero1.json"])
