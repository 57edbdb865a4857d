"""Bad input never stops training silently: skipped and counted with its path, or raised when strict."""
import json
import shutil

import pytest

from conftest import dataset_config, run_script
from minigpt.cli.main import main as minigpt_main
from minigpt.datasets.accounting import SampleAccounting
from minigpt.datasets.builders.base import build_dataset


@pytest.fixture()
def broken_sharegpt(tmp_path, formats):
    """The ShareGPT4V example with one image missing, one corrupt, and one record with misordered turns."""
    source = formats["sharegpt4v"]["build_info"]
    images = tmp_path / "images"
    shutil.copytree(source["image_path"], images)
    (images / "img_000001.jpg").unlink()
    (images / "img_000002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    records = json.loads(open(source["ann_path"]).read())
    records[3]["conversations"] = records[3]["conversations"][1:]  # starts with the answer
    records[4]["conversations"][0]["value"] = "What <image> colours?"
    ann = tmp_path / "broken.json"
    ann.write_text(json.dumps(records))
    return {"build_info": {"ann_path": str(ann), "image_path": str(images)}}


def test_missing_and_corrupt_images_are_skipped_with_their_paths(tmp_path, shapes_dir, broken_sharegpt):
    config, _ = dataset_config(tmp_path, shapes_dir, {"sharegpt4v": broken_sharegpt})
    dataset = build_dataset("sharegpt4v", config.datasets.sharegpt4v)
    assert dataset[1]["skip"] == ("missing image", str(tmp_path / "images" / "img_000001.jpg"))
    assert dataset[2]["skip"] == ("unreadable image", str(tmp_path / "images" / "img_000002.jpg"))
    strict = build_dataset("sharegpt4v", config.datasets.sharegpt4v, strict=True)
    with pytest.raises(ValueError, match=r"broken\.json: id 'sg-1': missing image .*img_000001\.jpg"):
        strict[1]


def test_accounting_counts_by_dataset_and_reason_and_keeps_every_skip(tmp_path):
    accounting = SampleAccounting(["a", "b"], tmp_path / "skipped.jsonl", printer=lambda message: None)
    accounting.add({"datasets": ["a", "a"], "truncated": [True, False], "skipped": [
        {"dataset": "a", "id": "3", "reason": "missing image", "detail": "/x/3.jpg"},
        {"dataset": "b", "id": "9", "reason": "no answer token fits", "detail": "too long"}]})
    summary = accounting.end_epoch()
    assert summary["a"] == {"used": 2, "truncated": 1, "missing image": 1, "unreadable image": 0, "broken record": 0,
                            "invalid conversation": 0, "no answer token fits": 0}
    assert SampleAccounting.describe(summary) == ("a: 2 used (1 truncated), 1 skipped (missing image: 1); "
                                                  "b: 0 used (0 truncated), 1 skipped (no answer token fits: 1)")
    lines = [json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert [line["detail"] for line in lines] == ["/x/3.jpg", "too long"]
    assert accounting.end_epoch()["a"]["used"] == 0  # each epoch counts afresh


def test_training_logs_used_and_skipped_per_dataset(tmp_path, shapes_dir, formats, broken_sharegpt):
    datasets = {"sharegpt4v": {**broken_sharegpt, "batch_size": 13, "sample_ratio": 1.0},
                "ok_vqa": {**formats["ok_vqa"], "batch_size": 4, "sample_ratio": 1.0}}
    config, path = dataset_config(tmp_path, shapes_dir, datasets, max_epoch=2, iters_per_epoch=3, log_freq=1)
    result = run_script(["train.py", "--cfg-path", str(path)])
    output = result.stdout + result.stderr
    assert "skipped sharegpt4v sample sg-1: missing image" in output
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    epochs = [entry["epoch_samples"] for entry in log if "epoch_samples" in entry]
    assert len(epochs) == 2
    draws = [entry["samples_by_dataset_rank0"] for entry in log if "samples_by_dataset_rank0" in entry]
    for epoch, steps in zip(epochs, (draws[:3], draws[3:])):
        batches = {name: sum(name in step for step in steps) for name in datasets}
        share = epoch["sharegpt4v"]
        assert share["missing image"] == share["unreadable image"] == share["invalid conversation"] == batches["sharegpt4v"]
        assert share["used"] == 10 * batches["sharegpt4v"] and epoch["ok_vqa"]["used"] == 4 * batches["ok_vqa"]
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped-rank0.jsonl").read_text().splitlines()]
    assert {s["reason"] for s in skipped} == {"missing image", "unreadable image", "invalid conversation"}
    assert any(s["detail"].endswith("img_000001.jpg") for s in skipped)


def test_check_dataset_reports_problems_with_record_ids(tmp_path, shapes_dir, formats, broken_sharegpt, capsys):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"question_id": 1, "image": "a.jpg", "question": "q", "answer": ["a"]}, {"question_id": 2,,}]')
    datasets = {"sharegpt4v": broken_sharegpt, "gqa": formats["gqa"],
                "ok_vqa": {"build_info": {"ann_path": str(bad_json), "image_path": str(tmp_path)}}}
    _, path = dataset_config(tmp_path, shapes_dir, datasets)
    assert minigpt_main(["check-data", "--cfg-path", str(path)]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in datasets}
    assert rows["gqa"].split()[1:4] == ["12", "12", "0"] and rows["gqa"].endswith("none")
    assert rows["sharegpt4v"].split()[1:4] == ["13", "11", "3"]
    assert "record sg-1: missing image" in out and "record sg-2: unreadable image" in out
    assert "record sg-3: invalid conversation: sample 'sg-3': turns must alternate" in out
    assert "record sg-4: <image> marker: conversations[0]: <image> marker in the middle of the text" in out
    assert "bad.json: record 1: malformed JSON" in out
    # a resampled stream (as stage-1 configs set) is endless in training; the check reads each shard once
    _, clean = dataset_config(tmp_path, shapes_dir, {"gqa": formats["gqa"], "laion": {**formats["laion"], "resampled": True}})
    assert minigpt_main(["check-data", "--cfg-path", str(clean)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("laion")}
    assert rows["laion"][1:4] == ["12", "12", "0"]
    # before stage 1 has written the checkpoint a stage-2 config starts from
    assert minigpt_main(["check-data", "--cfg-path", str(clean), "--options", f"model.ckpt={tmp_path}/stage1"]) == 0
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    _, path = dataset_config(tmp_path, shapes_dir, {"sharegpt4v": {"build_info": {"ann_path": str(empty),
                                                                                  "image_path": str(tmp_path)}}})
    assert minigpt_main(["check-data", "--cfg-path", str(path)]) == 1
    assert "record -: no records: the data set yields no sample" in capsys.readouterr().out


def test_literal_image_markers_are_refused_by_the_checker_and_by_training_alike(tmp_path, shapes_dir, formats, capsys):
    """A text-only record asking about "<ImageHere>" passed the checker and then crashed training (more image
    slots than images); an answer holding it trained on placeholder tokens. Both are now refused by id."""
    source = formats["sharegpt4v"]["build_info"]
    records = json.loads(open(source["ann_path"]).read())
    text_only = next(r for r in records if "image" not in r)
    records.append({**text_only, "id": "marker-question", "conversations": [
        {"from": "human", "value": "What does <ImageHere> mean?"}, {"from": "gpt", "value": "a placeholder"}]})
    records[0]["conversations"][1]["value"] = "red <Img>"
    ann = tmp_path / "markers.json"
    ann.write_text(json.dumps(records))
    section = {"build_info": {"ann_path": str(ann), "image_path": source["image_path"]}, "batch_size": len(records)}
    _, path = dataset_config(tmp_path, shapes_dir, {"sharegpt4v": section}, iters_per_epoch=1, log_freq=1)
    assert minigpt_main(["check-data", "--cfg-path", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"record {records[0]['id']}: invalid conversation:" in out and "'<Img>'" in out
    assert "record marker-question: invalid conversation:" in out and "'<ImageHere>'" in out
    run_script(["train.py", "--cfg-path", str(path)])  # trains on the rest, the two counted as skipped
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped-rank0.jsonl").read_text().splitlines()]
    assert sorted(s["id"] for s in skipped) == sorted([records[0]["id"], "marker-question"])
