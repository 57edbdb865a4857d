"""bench/gpu_check.sh --dry-run: the GPU check's every step, end to end on the CPU at tiny shapes, so the
script is known to work the day a GPU is lent (no timing asserts)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow  # three benchmarks' whole runs, in subprocesses (a few minutes)
def test_the_gpu_check_runs_every_benchmark_and_prints_one_summary(tmp_path):
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", str(tmp_path)], cwd=REPO, capture_output=True,
                            text=True, timeout=1200, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "gpu_check_dryrun.txt").read_text() in result.stdout

    training = json.loads((tmp_path / "train_throughput_dryrun.json").read_text())
    assert [(row["stage"], row["model"]) for row in training["runs"]] == [
        ("stage2", "baseline"), ("stage2", "ours_plain"), ("stage2", "ours_scored"), ("stage2", "ours")]
    assert all(row["samples_per_s"] > 0 and row["peak_memory_gib"] > 0 for row in training["runs"])
    assert len({row["tokens_per_sample"] for row in training["runs"]}) == 1  # the same batches for every runner
    assert training["runs"][-1]["rows"] < training["runs"][0]["rows"]  # packed: fewer rows
    assert set(training["ratios"]["stage2"]["steps"]) == {"ours_plain", "ours_scored", "ours"}
    assert {row["attn"] for row in training["runs"]} == {"sdpa"}
    assert all(row["rounds"] == 2 and len(row["samples_per_s_by_round"]) == 2 for row in training["runs"])
    assert all(row["samples_per_s_min"] <= row["samples_per_s"] <= row["samples_per_s_max"] for row in training["runs"])
    losses = [row["first_loss"] for row in training["runs"]]
    assert max(losses) - min(losses) < 1e-4  # the baseline and every lever compute the same loss
    assert len({str(row["precision"]) + str(row["attention"]) for row in training["runs"]}) == 1

    chat = json.loads((tmp_path / "generate_dryrun.json").read_text())["runs"]
    assert {(run["model"], run["mode"]) for run in chat} == {(model, mode) for model in ("ours", "baseline")
                                                             for mode in ("bf16", "int8", "nf4")}
    nf4 = [run for run in chat if run["mode"] == "nf4"]
    assert {run["llm_layer"] for run in nf4} == {"Linear4bit uint8"}  # the baseline quantised alike
    assert all(set(run["by_batch_size"]) == {"1", "8"} for run in chat)
    # a random model may end an answer at its first token, leaving nothing to time; most go on
    assert sum(run["by_batch_size"]["8"]["decode_tokens_per_s"] > 0 for run in chat) >= len(chat) // 2
    assert all(run["peak_gib_after_batches"] >= run["peak_gib_after_loading"] > 0 for run in chat)

    steps = json.loads((tmp_path / "train_steps_dryrun.json").read_text())["runs"]
    assert [row["run"] for row in steps] == ["plain", "zero2", "qlora_nf4"]
    assert all(row["steps"] >= 1 and row["samples_per_s"] > 0 and row["loss"] > 0 for row in steps)
    assert "train.py zero2" in result.stdout and "chat minigpt4 ours nf4" in result.stdout
