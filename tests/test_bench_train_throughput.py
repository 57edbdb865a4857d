"""Smoke test of the training-throughput benchmark at its tiny preset (no timing asserts)."""
import json

import pytest

from conftest import run_script


@pytest.mark.slow  # a benchmark's whole run, in a subprocess (about 25 s)
def test_train_throughput_benchmark_times_ours_and_the_blip2_baseline(tmp_path):
    out = tmp_path / "result.json"
    result = run_script(["bench/train_throughput.py", "--preset", "tiny", "--device", "cpu", "--stages", "stage1",
                         "--warmup", "1", "--steps", "2", "--out", str(out)])
    assert "ours / baseline throughput" in result.stdout
    report = json.loads(out.read_text())
    assert [(row["stage"], row["model"]) for row in report["runs"]] == [("stage1", "ours"), ("stage1", "baseline")]
    assert all(row["samples_per_s"] > 0 and row["peak_memory_gib"] > 0 for row in report["runs"])
    assert report["runs"][0]["tokens_per_sample"] == report["runs"][1]["tokens_per_sample"] > 8  # the same batches
    assert report["ratios"]["stage1"]["throughput"] > 0
