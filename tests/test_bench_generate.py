"""Smoke test of the generation benchmark at test size on the CPU (no timing asserts)."""
import json

import pytest

from conftest import run_script


@pytest.mark.slow  # a benchmark's whole run, in a subprocess (about 25 s)
def test_generation_benchmark_times_ours_and_the_blip2_baseline(tmp_path):
    out = tmp_path / "result.json"
    result = run_script(["bench/generate.py", "--shape", "tiny", "--device", "cpu", "--arch", "minigpt4",
                         "--modes", "nf4", "--new-tokens", "8", "--batch-sizes", "1", "2",
                         "--work-dir", str(tmp_path), "--out", str(out)])
    assert "tokens/s" in result.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [(run["arch"], run["model"], run["mode"]) for run in runs] == [("minigpt4", "ours", "nf4"),
                                                                          ("minigpt4", "baseline", "nf4")]
    assert runs[0]["llm_layer"] == runs[1]["llm_layer"] == "Linear4bit uint8"  # the baseline quantised alike
    assert runs[0]["llm_weights_gib"] == runs[1]["llm_weights_gib"]
    assert all(set(run["by_batch_size"]) == {"1", "2"} and run["by_batch_size"]["2"]["decode_tokens_per_s"] > 0
               for run in runs)
    assert runs[0]["peak_gib_after_first_answer"] >= runs[0]["peak_gib_after_loading"] > 0
    assert runs[0]["prompt_tokens"] > runs[0]["image_tokens"] == 8  # the tiny Q-Former's 8 queries
