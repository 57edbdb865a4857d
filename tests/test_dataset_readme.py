"""The "add your own data set" example of dataset/README.md works exactly as written."""
import csv
import json
import re
import shutil
import subprocess
import sys

from omegaconf import OmegaConf

from conftest import REPO
import minigpt.datasets.builders  # noqa: F401  (registers every builder)
from minigpt.common import registry


def readme_examples() -> dict[str, str]:
    text = (REPO / "dataset" / "README.md").read_text()
    return dict(re.findall(r"<!-- example: (\S+) -->\n```\w+\n(.*?)```", text, flags=re.S))


def test_add_your_own_dataset_example_trains(tmp_path, shapes_dir):
    examples = readme_examples()
    assert set(examples) == {"minigpt/datasets/builders/my_qa.py", "minigpt/defaults/datasets/my_qa/default.yaml", "datasets"}
    builder_lines = examples["minigpt/datasets/builders/my_qa.py"].count("\n")
    assert builder_lines + examples["minigpt/defaults/datasets/my_qa/default.yaml"].count("\n") <= 40

    # A copy of the package with the two new files, as a user would add them.
    shutil.copytree(REPO / "minigpt", tmp_path / "minigpt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "train.py", tmp_path / "train.py")
    for relative in ("minigpt/datasets/builders/my_qa.py", "minigpt/defaults/datasets/my_qa/default.yaml"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(examples[relative])

    # The user's data, where the config lines of the example point.
    (tmp_path / "data" / "my_images").mkdir(parents=True)
    records = json.loads((shapes_dir / "train.json").read_text())[:40]
    with open(tmp_path / "data" / "my_qa.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "question", "answer"])
        for record in records:
            shutil.copy(shapes_dir / "images" / record["image"], tmp_path / "data" / "my_images")
            turns = record["conversations"]
            writer.writerow([record["image"], turns[0]["value"].replace("<image>\n", ""), turns[1]["value"]])

    config = OmegaConf.load(REPO / "train_configs" / "tiny_stage2.yaml")
    config.datasets = OmegaConf.create(examples["datasets"]).datasets
    config.model.tokenizer = str(shapes_dir / "tokenizer")
    config.model.ckpt = None
    config.run.iters_per_epoch = 4
    config.run.log_freq = 1
    config.run.output_dir = str(tmp_path / "out")
    OmegaConf.save(config, tmp_path / "config.yaml")
    result = subprocess.run([sys.executable, "train.py", "--cfg-path", "config.yaml",
                             "--options", "datasets.my_qa.vis_processor.train.image_size=64"],  # the tiny model's size
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    epoch = next(e["epoch_samples"] for e in log if "epoch_samples" in e)
    assert epoch["my_qa"]["used"] == 32 and sum(v for k, v in epoch["my_qa"].items() if k not in ("used", "truncated")) == 0
    assert not (REPO / "minigpt" / "datasets" / "builders" / "my_qa.py").exists()


def test_every_registered_builder_is_in_the_builders_table():
    """Each builder class has a row in dataset/README.md's table naming it (a new builder without one fails here)."""
    text = (REPO / "dataset" / "README.md").read_text()
    table = text[text.index("## The builders and their files"):text.index("### Where the files come from")]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    classes: dict[type, list[str]] = {}
    for name in registry.names("builder"):
        classes.setdefault(registry.get("builder", name), []).append(name)
    assert len(classes) >= 15, sorted(classes, key=str)
    missing = [names for names in classes.values() if not any(f"`{name}`" in row for row in rows for name in names)]
    assert not missing, f"builders without a row in dataset/README.md: {missing}"
