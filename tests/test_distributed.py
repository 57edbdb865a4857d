"""Two ranks on the CPU: DDP equals one process with doubled accumulation, and DeepSpeed ZeRO 1/2/3
equals DDP (loss curve and weights), resumes, and checks its config."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, free_port, losses, stage2_options
from minigpt.common.checkpoint import read_weights
from minigpt.common.errors import ConfigError, InputError
from minigpt.config.loader import load_config

STAGE2 = "train_configs/tiny_stage2.yaml"
BIN = os.path.dirname(sys.executable)
# Accumulation and clipping on, so both reach DeepSpeed from our config; no dropout, whose masks differ by rank.
STEPS = ["model.ckpt=null", "run.log_freq=1", "datasets.sharegpt4v.batch_size=8", "run.warmup_steps=2",
         "run.iters_per_epoch=6", "run.ckpt_freq=3", "run.accum_grad_iters=2", "run.max_grad_norm=1.0",
         "model.qformer_config.hidden_dropout_prob=0.0", "model.qformer_config.attention_probs_dropout_prob=0.0"]


def train(launcher: list[str], data_dir, output_dir, *extra, with_output: bool = False):
    """Run train.py (on 2 ranks unless `launcher` is plain python); -> step -> loss (and what it printed)."""
    command = [*launcher, "train.py", "--cfg-path", STAGE2, "--options", *stage2_options(data_dir), *STEPS,
               f"run.output_dir={output_dir}", *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    return (losses(output_dir), result.stdout + result.stderr) if with_output else losses(output_dir)


def torchrun() -> list[str]:
    return [os.path.join(BIN, "torchrun"), "--nproc-per-node", "2", "--master-port", free_port()]


@pytest.fixture(scope="module")
def ddp_run(shapes_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("ddp")
    curve, printed = train(torchrun(), shapes_dir, output, with_output=True)
    return curve, output, re.search(r"MiniGPT4: ([\d,]+) trainable parameters", printed).group(1)


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process_with_doubled_accumulation(shapes_dir, tmp_path, ddp_run):
    ddp_curve, ddp_output, _ = ddp_run
    single_curve = train([sys.executable], shapes_dir, tmp_path, "run.accum_grad_iters=4")
    assert list(single_curve) == list(ddp_curve) == list(range(1, 7))
    assert list(ddp_curve.values()) == pytest.approx(list(single_curve.values()), rel=1e-4)
    single_weights, ddp_weights = read_weights(tmp_path), read_weights(ddp_output)
    assert all(torch.allclose(single_weights[k], ddp_weights[k], atol=1e-5) for k in single_weights)


@pytest.mark.slow
def test_ddp_with_logits_at_every_position_gives_the_same_run(shapes_dir, tmp_path, ddp_run):
    """The LM head only at labelled positions (the default, ddp_run) against transformers' computation over
    every position, both under DDP: the same loss curve and weights."""
    ddp_curve, ddp_output, _ = ddp_run
    full_curve = train(torchrun(), shapes_dir, tmp_path, "model.logits_where_scored=false")
    assert list(full_curve.values()) == pytest.approx(list(ddp_curve.values()), abs=1e-5)
    full_weights, ddp_weights = read_weights(tmp_path), read_weights(ddp_output)
    assert all(torch.allclose(full_weights[k], ddp_weights[k], atol=1e-5) for k in full_weights)


def two_nodes(shapes_dir, output_dir, *extra) -> dict[int, float]:
    """train.py as two nodes of one process each: two torchrun agents meeting at a c10d rendezvous on the
    loopback address, as two machines meet at the first one's; -> step -> loss."""
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [subprocess.Popen(
        [os.path.join(BIN, "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes", "--node-rank", str(node), "train.py", "--cfg-path",
         STAGE2, "--options", *stage2_options(shapes_dir), *STEPS, f"run.output_dir={output_dir}", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    outputs = [agent.communicate(timeout=600) for agent in agents]
    for agent, (_, stderr) in zip(agents, outputs):
        assert agent.returncode == 0, stderr[-5000:]
    return losses(output_dir)


@pytest.mark.slow
def test_two_nodes_match_one_node_with_two_processes_and_resume(shapes_dir, tmp_path, ddp_run):
    ddp_curve, ddp_output, _ = ddp_run
    curve = two_nodes(shapes_dir, tmp_path / "run")
    assert list(curve) == list(ddp_curve) == list(range(1, 7))
    assert list(curve.values()) == pytest.approx(list(ddp_curve.values()), rel=1e-4)
    weights, ddp_weights = read_weights(tmp_path / "run"), read_weights(ddp_output)
    assert all(torch.allclose(weights[k], ddp_weights[k], atol=1e-5) for k in weights)
    resumed = two_nodes(shapes_dir, tmp_path / "resumed", f"run.resume_ckpt_path={tmp_path}/run/checkpoint_0000003")
    assert list(resumed) == [4, 5, 6]
    assert list(resumed.values()) == pytest.approx([curve[4], curve[5], curve[6]], rel=1e-5)


# DeepSpeed JSONs as LLaVA (scripts/zero2.json) and LLaMA-Factory (examples/deepspeed/ds_z3_config.json) ship
# them: "auto" wherever the trainer knows the value.
FP16_AUTO = {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16, "hysteresis": 2,
             "min_loss_scale": 1}
LLAVA_ZERO2 = {"fp16": FP16_AUTO, "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto",
               "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
               "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                     "sub_group_size": 1e9, "reduce_bucket_size": "auto"}}
LLAMA_FACTORY_ZERO3 = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                       "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
                       "zero_allow_untested_optimizer": True,
                       "fp16": FP16_AUTO, "bf16": {"enabled": "auto"},
                       "zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True,
                                             "sub_group_size": 1e9, "reduce_bucket_size": "auto",
                                             "stage3_prefetch_bucket_size": "auto",
                                             "stage3_param_persistence_threshold": "auto",
                                             "stage3_max_live_parameters": 1e9, "stage3_max_reuse_distance": 1e9,
                                             "stage3_gather_16bit_weights_on_model_save": True}}


def deepspeed_json(folder, stage: int) -> str:
    """Stage 1: our shipped file; stages 2 and 3: copies of LLaVA's and LLaMA-Factory's, run unchanged."""
    if stage == 1:
        return "train_configs/deepspeed/zero1.json"
    path = folder / f"zero{stage}.json"
    path.write_text(json.dumps(LLAVA_ZERO2 if stage == 2 else LLAMA_FACTORY_ZERO3))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("stage, launcher", [(1, "deepspeed"), (2, "torchrun"), (3, "torchrun")])
def test_zero_stage_matches_ddp(shapes_dir, tmp_path, ddp_run, stage, launcher):
    ddp_curve, ddp_output, ddp_trainable = ddp_run
    command = ([os.path.join(BIN, "deepspeed"), "--num_gpus", "2", "--master_port", free_port()] if launcher == "deepspeed"
               else torchrun())
    settings = deepspeed_json(tmp_path.parent, stage)
    curve, printed = train(command, shapes_dir, tmp_path, f"run.deepspeed_config={settings}", with_output=True)
    assert f"MiniGPT4: {ddp_trainable} trainable parameters" in printed  # counted whole, also under ZeRO-3
    assert list(curve) == list(ddp_curve) == list(range(1, 7))
    assert list(curve.values()) == pytest.approx(list(ddp_curve.values()), rel=1e-4)
    ours, expected = read_weights(tmp_path), read_weights(ddp_output)
    assert ours.keys() == expected.keys()
    assert all(torch.allclose(ours[key], expected[key], atol=1e-5) for key in expected)
    checkpoint = tmp_path / "checkpoint_0000006"
    assert len(list((checkpoint / "deepspeed").glob("*optim_states.pt"))) == 2  # one partition per rank
    assert not list(checkpoint.glob("zero_to_*.py"))
    if stage >= 2:  # resume from the step-3 checkpoint: the same steps 4..6
        resumed = train(torchrun(), shapes_dir, tmp_path / "resumed",
                        f"run.deepspeed_config={settings}", f"run.resume_ckpt_path={tmp_path}/checkpoint_0000003")
        assert list(resumed) == [4, 5, 6]
        assert list(resumed.values()) == pytest.approx([curve[4], curve[5], curve[6]], rel=1e-5)


def config_with(shapes_dir, tmp_path, deepspeed_config, *extra):
    options = stage2_options(shapes_dir) + ["model.ckpt=null", f"run.output_dir={tmp_path}", *extra]
    return load_config(REPO / STAGE2, options + [f"run.deepspeed_config={deepspeed_config}"])


def test_deepspeed_config_takes_accumulation_clipping_and_batch_from_ours(shapes_dir, tmp_path):
    from minigpt.runners.deepspeed_config import deepspeed_settings

    path = tmp_path / "zero2.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": 4}))
    config = config_with(shapes_dir, tmp_path, path, "run.accum_grad_iters=4", "run.max_grad_norm=2.0",
                         "datasets.sharegpt4v.batch_size=6")
    settings = deepspeed_settings(config.run, 6, on_gpu=False)
    assert settings["gradient_accumulation_steps"] == 4 and settings["gradient_clipping"] == 2.0
    assert settings["train_micro_batch_size_per_gpu"] == 6 and settings["zero_optimization"]["stage"] == 2
    assert not settings["bf16"]["enabled"] and not settings["fp16"]["enabled"]  # AMP is for GPUs
    with_amp = deepspeed_settings(load_config(REPO / STAGE2, stage2_options(shapes_dir) + [
        "model.ckpt=null", "run.amp=true", "run.deepspeed_config={zero_optimization: {stage: 1}}"]).run, 6, on_gpu=True)
    assert with_amp["bf16"]["enabled"] and not with_amp["fp16"]["enabled"]


def test_deepspeed_jsons_as_llava_and_llama_factory_ship_them_have_their_autos_filled(shapes_dir, tmp_path):
    from minigpt.runners.deepspeed_config import deepspeed_settings

    adamw = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}
    for name, settings in (("zero2", LLAVA_ZERO2), ("zero3", {**LLAMA_FACTORY_ZERO3, "optimizer": adamw})):
        (tmp_path / f"{name}.json").write_text(json.dumps(settings))
    options = ("run.accum_grad_iters=4", "run.max_grad_norm=2.0", "run.init_lr=3e-4", "run.weight_decay=0.05")
    zero2_config = config_with(shapes_dir, tmp_path, tmp_path / "zero2.json", *options).run
    zero2 = deepspeed_settings(zero2_config, 6, on_gpu=False, world_size=2, hidden_size=128)
    batches = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")
    assert [zero2[key] for key in batches] == [6, 4, 6 * 4 * 2]
    assert zero2["fp16"] == {**FP16_AUTO, "enabled": False} and zero2["bf16"] == {"enabled": False}
    assert zero2["zero_optimization"]["reduce_bucket_size"] == 128 * 128
    zero3_config = config_with(shapes_dir, tmp_path, tmp_path / "zero3.json", *options).run
    zero3 = deepspeed_settings(zero3_config, 6, on_gpu=False, world_size=1, hidden_size=128)
    assert zero3["gradient_clipping"] == 2.0 and zero3["train_batch_size"] == 24
    assert zero3["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.9, zero3_config.beta2], "eps": 1e-8,
                                            "weight_decay": 0.05}
    zero = zero3["zero_optimization"]
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 128 * 128)
    assert zero["stage3_param_persistence_threshold"] == 1280
    before_the_model = deepspeed_settings(zero3_config, 6, on_gpu=False)["zero_optimization"]  # at config validation
    assert "reduce_bucket_size" not in before_the_model and before_the_model["stage3_max_live_parameters"] == 1e9


@pytest.mark.parametrize("setting, message", [
    ('{"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": 8}',
     "gradient_accumulation_steps is 8 there but 1 from run.accum_grad_iters"),
    ('{"zero_optimization": {"stage": 2}, "train_batch_size": 64}',
     "train_batch_size is 64 there but 32 from batch_size x run.accum_grad_iters x ranks"),
    ('{"zero_optimization": {"stage": 2, "reduce_scatter": "auto"}}', "zero_optimization.reduce_scatter is 'auto'"),
    ('{"zero_optimization": {"stage": 2}, "scheduler": {"type": "WarmupLR"}}', "leave out the scheduler (WarmupLR)"),
    ('{"zero_optimization": {"stage": 2}, "optimizer": {"params": {"momentum": "auto"}}}',
     "optimizer.params.momentum is 'auto'"),
    ('{"zero_optimization": {"stage": 2}, "comms_logger": {"enabled": "auto"}}', "comms_logger.enabled is 'auto'"),
    ('{"zero_optimization": {"stage": 0}}', "stage 0 is plain data parallelism"),
    (None, "does not exist"),
])
def test_bad_deepspeed_config_is_refused_before_building(shapes_dir, tmp_path, setting, message):
    path = tmp_path / "ds.json"
    if setting:
        path.write_text(setting)
    with pytest.raises(ConfigError, match="run.deepspeed_config") as error:
        config_with(shapes_dir, tmp_path, path)
    assert message in str(error.value)


def test_deepspeed_checkpoint_files_load_weights_only(tmp_path):
    """DeepSpeed pickles its optimiser partitions; ours are read with weights_only, so a payload never runs."""
    from minigpt.runners.engines import weights_only_checkpoint_engine

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"optimizer_state_dict": Payload()}, tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(InputError, match=r"optim_states\.pt: refused, not a file of plain tensors: unpickling it would "
                                         r"import and run io\.open$"):  # one line, not torch's page of advice
        weights_only_checkpoint_engine().load(str(tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    assert not marker.exists()
    torch.save({"state": {"exp_avg": torch.ones(3)}, "ds_version": "0.19"}, tmp_path / "plain.pt")
    assert torch.equal(weights_only_checkpoint_engine().load(str(tmp_path / "plain.pt"))["state"]["exp_avg"], torch.ones(3))


def test_resume_into_another_engine_layout_is_refused(tmp_path):
    from minigpt.common.dist import DistInfo
    from minigpt.runners.engines import PlainEngine, check_same_engine

    layer = torch.nn.Linear(2, 2)
    engine = PlainEngine(layer, torch.optim.AdamW(layer.parameters()), DistInfo(), None, fp16_scaling=False)
    deepspeed_state = {"engine": "deepspeed", "zero_stage": 2, "world_size": 2}
    with pytest.raises(ValueError, match="engine deepspeed, zero_stage 2, world_size 2, but this run has engine plain"):
        engine.load_state_dict(deepspeed_state, tmp_path)
    with pytest.raises(ValueError, match="world_size 2, but this run has engine deepspeed, zero_stage 2, world_size 4"):
        check_same_engine(deepspeed_state, {"engine": "deepspeed", "zero_stage": 2, "world_size": 4}, tmp_path)
    check_same_engine(deepspeed_state, dict(deepspeed_state), tmp_path)  # the same layout resumes
    engine.load_state_dict({**engine.state_dict(), "step": 3}, tmp_path)  # and a plain checkpoint into plain
