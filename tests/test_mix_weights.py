"""Weight mixing: alpha 0 and 1 give the inputs back bit for bit, 0.5 the midpoint, and checkpoints of
different architectures are refused with a message naming the difference, before anything is written."""
import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from minigpt.cli.main import main as minigpt_main
from minigpt.common import registry
from minigpt.common.checkpoint import save_checkpoint
from minigpt.config.loader import load_config
from minigpt.models.weights import load_weights
from minigpt.ops.mix_weights import mix_checkpoints


def finetuned(shapes_dir, tmp_path, name, seed, *options):
    """A checkpoint of the tiny MiniGPT-v2 with its own random weights (one 'domain' each)."""
    config = load_config("train_configs/tiny_v2.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", *options],
                         for_training=False)
    torch.manual_seed(seed)
    model = registry.get("model", config.model.arch).from_config(config.model)
    weights = model.checkpoint_weights()
    weights["view_scale"] = torch.randn(8).to(torch.bfloat16)  # a half-precision tensor too
    weights["edge_values"] = torch.tensor([-0.0, float("inf"), -float("inf"), seed])  # what a formula would bend
    weights["step_counter"] = torch.tensor([7], dtype=torch.int64)  # an integer buffer: must agree
    return save_checkpoint(tmp_path / name, 100, weights, {"step": 100}, config), model, config


@pytest.fixture
def two_domains(shapes_dir, tmp_path):
    a, model, config = finetuned(shapes_dir, tmp_path, "real", 1)
    b, _, _ = finetuned(shapes_dir, tmp_path, "synthetic", 2)
    return a, b, model, config


def test_alpha_0_and_1_reproduce_the_inputs_exactly(two_domains, tmp_path):
    a, b, _, _ = two_domains
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    for alpha, expected in ((0.0, first), (1.0, second)):
        out = mix_checkpoints(a, b, alpha, tmp_path / f"mix{alpha}")
        mixed = load_file(out / "model.safetensors")
        assert mixed.keys() == expected.keys()
        for key, value in expected.items():  # bit for bit: -0.0 stays -0.0, infinities stay
            assert mixed[key].dtype == value.dtype, key
            assert torch.equal(mixed[key].reshape(-1).view(torch.uint8), value.reshape(-1).view(torch.uint8)), key


def test_half_way_is_the_mean_and_loads_as_a_checkpoint(two_domains, tmp_path):
    a, b, model, config = two_domains
    out = tmp_path / "mixed"
    assert minigpt_main(["mix-weights", "--ckpt", str(a), "--ckpt", str(b), "--alpha", "0.5", "--out", str(out)]) == 0
    first, second, mixed = (load_file(path / "model.safetensors") for path in (a, b, out))
    key = "llama_model.model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(mixed[key], (first[key] + second[key]) / 2)
    assert not torch.equal(mixed[key], first[key])
    half = "view_scale"
    assert mixed[half].dtype == torch.bfloat16
    torch.testing.assert_close(mixed[half], ((first[half].float() + second[half].float()) / 2).to(torch.bfloat16))
    assert torch.isinf(mixed["edge_values"][1]) and mixed["edge_values"][3] == 1.5
    assert json.loads((out / "mix.json").read_text())["alpha"] == 0.5
    assert OmegaConf.load(out / "config.yaml").model.arch == config.model.arch
    report = load_weights(model, out)  # `model.ckpt: <out>` loads it
    assert report["missing_trainable"] == []
    torch.testing.assert_close(model.state_dict()[key], mixed[key])


def test_mismatched_architectures_are_refused(shapes_dir, two_domains, tmp_path):
    a, _, _, _ = two_domains
    wider, _, _ = finetuned(shapes_dir, tmp_path, "wider", 3, "model.llama_config.intermediate_size=320")
    with pytest.raises(ValueError, match=r"mlp\..*_proj.weight is torch.float32 \(\d+, \d+\) in the first"):
        mix_checkpoints(a, wider, 0.5, tmp_path / "never")
    mlp, _, _ = finetuned(shapes_dir, tmp_path, "mlp", 4, "model.proj_type=mlp")
    with pytest.raises(ValueError, match="their weights differ .*only in"):
        mix_checkpoints(a, mlp, 0.5, tmp_path / "never")
    # Same tensor shapes: configs that differ outside the architecture keys mix, inside them they do not.
    other, _, _ = finetuned(shapes_dir, tmp_path, "other", 5, "model.max_txt_len=100")
    config = OmegaConf.load(other / "config.yaml")
    config.model.task_identifiers = False  # not an architecture key: mixing is fine
    OmegaConf.save(config, other / "config.yaml")
    mix_checkpoints(a, other, 0.5, tmp_path / "fine")
    config.model.image_size = 64
    OmegaConf.save(config, other / "config.yaml")
    with pytest.raises(ValueError, match="model.image_size is 32 in the first config, 64 in the second"):
        mix_checkpoints(a, other, 0.5, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_lora_factors_are_refused(two_domains, tmp_path):
    """B1 A1 and B2 A2 mixed factor by factor give cross terms B1 A2: LoRA checkpoints are merged first."""
    a, b, _, _ = two_domains
    from safetensors.torch import save_file

    for path in (a, b):
        weights = load_file(path / "model.safetensors")
        weights["llama_model.model.layers.0.self_attn.q_proj.lora_A.weight"] = torch.randn(4, 128)
        save_file(weights, path / "model.safetensors")
    with pytest.raises(ValueError, match=r"LoRA weights .*minigpt export"):
        mix_checkpoints(a, b, 0.5, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_integer_tensors_must_agree_and_bad_arguments_fail_clearly(two_domains, tmp_path, capsys):
    a, b, _, _ = two_domains
    weights = load_file(b / "model.safetensors")
    weights["step_counter"] = torch.tensor([8])
    from safetensors.torch import save_file

    save_file(weights, b / "model.safetensors")
    with pytest.raises(ValueError, match="step_counter holds torch.int64 values, which do not mix"):
        mix_checkpoints(a, b, 0.5, tmp_path / "never")
    with pytest.raises(ValueError, match=r"--alpha 1.5: must lie in \[0, 1\]"):
        mix_checkpoints(a, a, 1.5, tmp_path / "never")
    (tmp_path / "taken").mkdir()
    assert minigpt_main(["mix-weights", "--ckpt", str(a), "--ckpt", str(a), "--out", str(tmp_path / "taken")]) == 2
    assert "exists; choose a new folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        minigpt_main(["mix-weights", "--ckpt", str(a), "--out", str(tmp_path / "one")])
