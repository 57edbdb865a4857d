"""Text-only samples train beside image samples; under DDP every rank still runs the vision path."""
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, dataset_config, free_port
from minigpt.common import registry
from minigpt.conversation.collator import collator_for
from minigpt.datasets.loader import BatchStream


def half_text_only(tmp_path, formats):
    """The ShareGPT4V example with every other record's image removed."""
    section = formats["sharegpt4v"]["build_info"]
    records = json.loads(open(section["ann_path"]).read())
    for record in records[::2]:
        record.pop("image", None)
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records))
    return {"build_info": {"ann_path": str(path), "image_path": section["image_path"]}}


def test_text_only_batch_gives_every_trainable_part_a_gradient(tmp_path, shapes_dir, formats):
    config, _ = dataset_config(tmp_path, shapes_dir, {"sharegpt4v": half_text_only(tmp_path, formats)})
    model = registry.get("model", config.model.arch).from_config(config.model)
    collator = collator_for(model, config.model.max_txt_len)
    from minigpt.datasets.builders.base import build_dataset

    dataset = build_dataset("sharegpt4v", config.datasets.sharegpt4v)
    batch = collator([dataset[0], dataset[2]])  # both text-only
    assert batch["images"] is None
    model.train()
    model(batch)["loss"].backward()
    for part in ("qformer", "projector"):
        for item in model.part_modules()[part]:
            params = [item] if isinstance(item, torch.nn.Parameter) else list(item.parameters())
            assert all(p.grad is not None and not p.grad.any() for p in params if p.requires_grad), part
    image_batch = collator([dataset[1], dataset[3]])
    assert image_batch["images"].shape[0] == 2


@pytest.mark.slow
def test_ranks_drawing_text_and_image_samples_do_not_hang(tmp_path, shapes_dir, formats):
    datasets = {"sharegpt4v": {**half_text_only(tmp_path, formats), "batch_size": 1}}
    config, path = dataset_config(tmp_path, shapes_dir, datasets, iters_per_epoch=12, log_freq=1)
    # The data order is a function of the seed: check that some step gives one rank text and the other an image.
    records = json.loads(open(datasets["sharegpt4v"]["build_info"]["ann_path"]).read())
    orders = [[batch[0] for batch in itertools.islice(
        BatchStream("s", list(range(len(records))), 1, list, config.run.seed, rank, 2).batches(), 12)] for rank in (0, 1)]
    mixed = [("image" in records[a]) != ("image" in records[b]) for a, b in zip(*orders)]
    assert sum(mixed) >= 3, mixed
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc-per-node", "2",
                "--master-port", free_port(), "train.py", "--cfg-path", str(path)]
    result = subprocess.run(torchrun, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(1, 13))
