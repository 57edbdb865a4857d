"""The training recipe through the real train.py: kill-and-resume, NaN stop, wandb and TensorBoard, curves and
checkpoint retention (DDP and ZeRO: test_distributed.py)."""
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from conftest import REPO, losses, run_script, stage2_options
from minigpt.common.checkpoint import read_weights

STAGE2 = "train_configs/tiny_stage2.yaml"


def options(shapes_dir, output_dir, *extra):
    return stage2_options(shapes_dir) + [
        "model.ckpt=null", f"run.output_dir={output_dir}", "run.log_freq=1", "datasets.sharegpt4v.batch_size=8",
        "run.warmup_steps=5", *extra]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_loss_curve(shapes_dir, tmp_path):
    steps = ["run.iters_per_epoch=40", "run.ckpt_freq=5"]
    straight = tmp_path / "straight"
    run_script(["train.py", "--cfg-path", STAGE2, "--options", *options(shapes_dir, straight, *steps)])

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "train.py", "--cfg-path", STAGE2, "--options",
                                *options(shapes_dir, killed, *steps)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint_0000010").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoint_0000040").exists(), "the run ended before it could be killed"
    resumed_from = max(int(p.name.split("_")[1]) for p in killed.glob("checkpoint_*"))

    run_script(["train.py", "--cfg-path", STAGE2, "--options",
                *options(shapes_dir, killed, *steps, "run.resume_ckpt_path=latest")])
    expected, got = losses(straight), losses(killed)
    after = [step for step in expected if step > resumed_from]
    assert len(after) >= 20
    assert [got[s] for s in after] == pytest.approx([expected[s] for s in after], rel=1e-5, abs=1e-6)
    final_expected, final_got = read_weights(straight), read_weights(killed)
    assert all(torch.allclose(final_expected[k], final_got[k], atol=1e-6) for k in final_expected)


def test_resume_keeps_the_data_position_and_takes_the_configs_optimiser_settings(shapes_dir, tmp_path):
    """Another accumulation or batch size would make the saved step mean other samples, so it is refused;
    changed weight decay, betas and lr_mult are this run's, not the checkpoint's (Adam's moments are kept)."""
    from minigpt.config.loader import load_config
    from minigpt.runners.train_recipe import TrainRecipe

    def recipe(*extra):
        made = TrainRecipe(load_config(REPO / STAGE2, options(shapes_dir, tmp_path, "run.iters_per_epoch=2", *extra)))
        made.setup()
        return made

    first = recipe()
    first.train()
    first.close()
    resume = ["run.resume_ckpt_path=latest", "run.max_epoch=2"]
    for changed, message in (("run.accum_grad_iters=2", "accum_grad_iters 1 -> 2"),
                             ("datasets.sharegpt4v.batch_size=4", "batch_sizes {'sharegpt4v': 8} -> {'sharegpt4v': 4}")):
        with pytest.raises(ValueError, match=rf"checkpoint_0000002 was trained with other batches \({message}\)"):
            recipe(*resume, changed)
    resumed = recipe(*resume, "run.weight_decay=0.5", "run.beta2=0.95", "model.parts.projector.lr_mult=3")
    groups = resumed.engine.optimizer.param_groups
    assert {g["weight_decay"] for g in groups} == {0.5, 0.0} and {g["betas"] for g in groups} == {(0.9, 0.95)}
    assert {g["lr_mult"] for g in groups if g["part"] == "projector"} == {3.0}
    assert all(resumed.engine.optimizer.state[p]["step"] == 2 for g in groups for p in g["params"])
    resumed.close()


def test_accumulation_trains_as_one_big_batch(shapes_dir, tmp_path):
    """Batch 8 x 2 micro-batches gives the loss curve and weights of batch 16: every answer token weighs
    the same, although the two halves hold different numbers of answer tokens."""
    from minigpt.config.loader import load_config
    from minigpt.runners.train_recipe import TrainRecipe

    def trained(name, batch_size, accum):
        no_dropout = ["model.qformer_config.hidden_dropout_prob=0.0", "model.qformer_config.attention_probs_dropout_prob=0.0"]
        recipe = TrainRecipe(load_config(REPO / STAGE2, options(shapes_dir, tmp_path / name, "run.iters_per_epoch=4", *no_dropout,
                                                               f"datasets.sharegpt4v.batch_size={batch_size}",
                                                               f"run.accum_grad_iters={accum}")))
        recipe.setup()
        halves = [next(recipe.batches.iterate(start_micro_step=micro))[1] for micro in range(2)]
        recipe.train()
        recipe.close()
        return losses(tmp_path / name), read_weights(tmp_path / name), halves

    big_losses, big_weights, _ = trained("big", 16, 1)
    accumulated_losses, accumulated_weights, halves = trained("accumulated", 8, 2)
    assert len({int((half["labels"] != -100).sum()) for half in halves}) == 2  # the halves differ in answer tokens
    assert list(accumulated_losses.values()) == pytest.approx(list(big_losses.values()), rel=1e-4)
    assert all(torch.allclose(big_weights[key], accumulated_weights[key], atol=1e-5) for key in big_weights)


def test_an_epoch_of_one_pass_says_what_it_holds_when_accumulation_does_not_divide_it(shapes_dir, tmp_path, capsys):
    from minigpt.config.loader import load_config
    from minigpt.runners.train_recipe import TrainRecipe

    recipe = TrainRecipe(load_config(REPO / STAGE2, options(shapes_dir, tmp_path, "run.iters_per_epoch=null",
                                                           "run.accum_grad_iters=7")))
    recipe.setup()
    batches = recipe.batches.streams["sharegpt4v"].batches_per_pass()
    recipe.close()
    assert batches % 7 and recipe.iters_per_epoch == batches // 7
    assert f"one pass over the data is {batches} batches, not a multiple of accum_grad_iters 7: an epoch is " \
           f"{batches // 7} steps" in capsys.readouterr().out


def test_non_finite_loss_stops_with_step_and_sample_ids(shapes_dir, tmp_path):
    from minigpt.config.loader import load_config
    from minigpt.runners.train_recipe import TrainRecipe

    config = load_config(REPO / STAGE2, options(shapes_dir, tmp_path, "run.iters_per_epoch=3"))
    recipe = TrainRecipe(config)
    recipe.setup()
    recipe.engine.module = lambda batch: {"loss": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 0 .*samples \['train_"):
        recipe.train()
    recipe.close()


def test_a_run_logs_to_wandb_and_tensorboard_plots_its_curves_and_keeps_its_last_checkpoints(shapes_dir, tmp_path):
    """wandb as asked; TensorBoard without asking, as it is installed (a run with tensorboard_log false below)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "logged_run"
    run_script(["train.py", "--cfg-path", STAGE2, "--options",
                *options(shapes_dir, out, "run.iters_per_epoch=3", "run.log_freq=1", "run.ckpt_freq=1",
                         "run.keep_last=2", "run.wandb_log=True")],  # TensorBoard: on when installed
               env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    curve = losses(out)
    assert list(curve) == [1, 2, 3]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "wandb wrote no offline run"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("loss")}
    assert list(logged) == [1, 2, 3] and list(logged.values()) == pytest.approx(list(curve.values()), rel=1e-5)
    assert {"lr", "grad_norm", "samples_by_dataset_rank0/sharegpt4v"} <= set(events.Tags()["scalars"])
    assert sorted(path.name for path in out.glob("checkpoint_*")) == ["checkpoint_0000002", "checkpoint_0000003"]
    with Image.open(out / "curves.png") as picture:
        colors = picture.convert("RGB").getcolors(1 << 20)
        assert picture.size[0] == 900 and any(color == (31, 119, 180) for _, color in colors)  # a curve drawn


def test_feature_cache_gives_the_same_loss_curve(shapes_dir, tmp_path, capsys):
    """Two passes over 40 images (5 batches of 8): the second pass is served from the cache."""
    from minigpt.config.loader import load_config
    from minigpt.runners.train_recipe import TrainRecipe

    curves = {}
    for name, extra in (("plain", []), ("cached", ["model.feature_cache_gb=0.05", "run.tensorboard_log=false"])):
        config = load_config(REPO / STAGE2, options(shapes_dir, tmp_path / name, "run.iters_per_epoch=5", "run.max_epoch=2",
                                                    "datasets.sharegpt4v.subsample_count=40",
                                                    "model.parts.qformer.mode=frozen", *extra))
        recipe = TrainRecipe(config)
        recipe.setup()
        recipe.train()
        recipe.close()
        curves[name] = losses(tmp_path / name)
    assert list(curves["cached"]) == list(range(1, 11))
    assert list(curves["cached"].values()) == pytest.approx(list(curves["plain"].values()), rel=1e-6)
    assert "epoch 1 feature cache: 40 images" in capsys.readouterr().out
    assert recipe.model.feature_cache.hits == 40 and recipe.model.feature_cache.misses == 40
    assert (tmp_path / "plain/tensorboard").is_dir() and not (tmp_path / "cached/tensorboard").exists()
