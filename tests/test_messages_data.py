"""Data as LLaMA-Factory and ms-swift users have it: `messages` + `images` records in JSON, JSON Lines,
Parquet, Arrow and `datasets.save_to_disk` folders, column mapping, and dataset_info.json entries by name."""
import io
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import dataset_config
from minigpt.common.errors import ConfigError
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import AnnotationError
from minigpt.datasets.builders.base import build_dataset


def swift_records(folder):
    """Two ms-swift style records: a system message, an <image> tag, one image each."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for index, colour in enumerate(("red", "blue")):
        Image.new("RGB", (64, 64), colour).save(folder / "img" / f"{colour}.png")
        records.append({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                     {"role": "user", "content": "<image>Which colour is this?"},
                                     {"role": "assistant", "content": f"It is {colour}."}],
                        "images": [f"img/{colour}.png"]})
    return records


def write_in(folder, kind: str, records: list[dict]) -> str:
    path = folder / f"data.{kind}"
    if kind == "json":
        path.write_text(json.dumps(records))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(record) for record in records))
    elif kind == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:  # arrow, in the IPC stream layout that datasets writes
        table = pa.Table.from_pylist(records)
        with pa.ipc.new_stream(path, table.schema) as writer:
            writer.write_table(table)
    return str(path)


def samples_of(tmp_path, shapes_dir, section: dict, builder: str = "messages"):
    config, _ = dataset_config(tmp_path, shapes_dir, {"mine": {"builder": builder, **section}})
    dataset = build_dataset("mine", config.datasets.mine)
    return [dataset[index] for index in range(len(dataset))]


@pytest.mark.parametrize("kind", ["json", "jsonl", "parquet", "arrow"])
def test_messages_records_are_read_from_every_file_kind(tmp_path, shapes_dir, kind):
    path = write_in(tmp_path, kind, swift_records(tmp_path))
    samples = samples_of(tmp_path, shapes_dir, {"build_info": {"ann_path": path, "image_path": str(tmp_path)}}, "swift")
    assert [s["turns"] for s in samples] == [[(USER, "Which colour is this?"), (ASSISTANT, f"It is {c}.")]
                                             for c in ("red", "blue")]
    red, blue = (s["image"] for s in samples)
    assert red.shape == (3, 64, 64) and red[0].mean() > blue[0].mean() and blue[2].mean() > red[2].mean()


def test_a_saved_datasets_folder_with_embedded_images_and_mapped_columns(tmp_path, shapes_dir):
    """LLaMA-Factory's sharegpt defaults (conversations, from/value, human/gpt) mapped in YAML, the images
    stored in the folder as Hugging Face Image values."""
    def png(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    rows = {"conversations": [[{"from": "human", "value": "<image>Colour?"}, {"from": "gpt", "value": colour}]
                              for colour in ("green", "white")],
            "pictures": [[png("green")], [png("white")]]}
    features = datasets.Features({"conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
                                  "pictures": datasets.Sequence(datasets.Image())})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    mapping = {"columns": {"messages": "conversations", "images": "pictures"},
               "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
    samples = samples_of(tmp_path, shapes_dir, {"build_info": {"ann_path": str(tmp_path / "saved")}, **mapping})
    assert [s["turns"][-1] for s in samples] == [(ASSISTANT, "green"), (ASSISTANT, "white")]
    green, white = (s["image"] for s in samples)
    assert white.mean() > green.mean() and torch.isfinite(green).all()


def test_a_dataset_info_entry_is_used_by_name(tmp_path, shapes_dir):
    write_in(tmp_path, "json", swift_records(tmp_path))
    info = {"mllm_demo": {"file_name": "data.json", "formatting": "sharegpt",
                          "columns": {"messages": "messages", "images": "images"},
                          "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                   "assistant_tag": "assistant"}},
            "alpaca_en": {"file_name": "alpaca.json"}, "gone": {"file_name": "missing.json", "formatting": "sharegpt"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    section = {"dataset_info": str(tmp_path / "dataset_info.json"), "build_info": {"image_path": str(tmp_path)}}
    samples = samples_of(tmp_path, shapes_dir, {**section, "dataset": "mllm_demo"}, "llamafactory")
    assert [s["turns"][1][1] for s in samples] == ["It is red.", "It is blue."]
    for entry, message in (("gone", "entry 'gone': its file_name .*missing.json does not exist"),
                           ("alpaca_en", "formatting 'alpaca'"), ("nothing", "no entry 'nothing'")):
        with pytest.raises(ConfigError, match=message):
            dataset_config(tmp_path, shapes_dir, {"mine": {"builder": "messages", **section, "dataset": entry}})


def test_bad_messages_data_is_named(tmp_path, shapes_dir):
    records = swift_records(tmp_path)
    path = write_in(tmp_path, "parquet", records)
    with pytest.raises(AnnotationError, match=r"data.parquet: missing column 'conversations' \(it has messages, images\)"):
        samples_of(tmp_path, shapes_dir, {"build_info": {"ann_path": path}, "columns": {"messages": "conversations"}})
    two_images = [records[0], {**records[1], "images": ["img/red.png", "img/blue.png"]}]
    path = write_in(tmp_path, "jsonl", two_images)
    with pytest.raises(AnnotationError, match="record 1 .*'images' holds 2 images; our prompts hold one"):
        samples_of(tmp_path, shapes_dir, {"build_info": {"ann_path": path, "image_path": str(tmp_path)}})
    robot = [{**records[0], "messages": [{"role": "robot", "content": "hi"}]}]
    path = write_in(tmp_path, "json", robot)
    with pytest.raises(AnnotationError, match=r"record 0 .*messages\[0\].role is 'robot', expected user or assistant"):
        samples_of(tmp_path, shapes_dir, {"build_info": {"ann_path": path}})
    with pytest.raises(ConfigError, match="name the data file"):
        dataset_config(tmp_path, shapes_dir, {"mine": {"builder": "messages"}})
