"""Smoke test of the generation benchmark at test size on the CPU (no timing asserts)."""
import json

from conftest import run_script


def test_generation_benchmark_loads_answers_and_times_each_mode(tmp_path):
    out = tmp_path / "result.json"
    result = run_script(["bench/generate.py", "--shape", "tiny", "--device", "cpu", "--arch", "minigpt_v2",
                         "--modes", "nf4", "--new-tokens", "8", "--batch-sizes", "1", "2", "--work-dir", str(tmp_path), "--out", str(out)])
    assert "tokens/s" in result.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [(run["arch"], run["mode"]) for run in runs] == [("minigpt_v2", "nf4")]
    assert runs[0]["llm_layer"] == "Linear4bit uint8"
    assert all(set(run["by_batch_size"]) == {"1", "2"} and run["by_batch_size"]["2"]["decode_tokens_per_s"] > 0
               and run["peak_gib_after_first_answer"] >= run["peak_gib_after_loading"] > 0 for run in runs)
    assert runs[0]["prompt_tokens"] > runs[0]["image_tokens"] == 16  # 32 px, patch 4: 64 patches, 4 per token
