"""Smoke test of the data-loading benchmark: every loader runs with 1 and 2 workers (no timing asserts)."""
import json

from conftest import run_script

LOADERS = {"laion", "cc_sbu_align", "sharegpt4v", "llava_detail", "face_annotations", "coco_caption", "textcaps",
           "refcoco", "ok_vqa", "aok_vqa", "gqa", "ocrvqa", "vizwiz", "vsr", "hateful_memes", "iconqa"}


def test_data_loading_benchmark_runs_every_loader(tmp_path):
    out = tmp_path / "result.json"
    result = run_script(["-m", "bench.data_loading", "--images", "16", "--batch-size", "4", "--batches", "1",
                         "--image-size", "64", "--out", str(out)])
    assert "slowest loader / training rate" in result.stdout
    report = json.loads(out.read_text())
    assert {row["dataset"] for row in report["loaders"]} == LOADERS
    assert all(row["samples_per_s_1_worker"] > 0 and row["samples_per_s_2_workers"] > 0 for row in report["loaders"])
    assert report["tiny_train_samples_per_s"] > 0
