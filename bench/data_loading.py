"""Does data loading keep up with training? Samples/s of every loader next to the training step rate.

    python -m bench.data_loading [--images 256] [--image-size 224] [--batch-size 16] [--out bench/results/data_loading.json]

Writes a small copy of every annotation layout (dataset/example_formats.py) and times each builder's
loader as training uses it: image decoding, the train image processor, template and tokenization in
the collator, in batches through a DataLoader with 1 and 2 workers. The tiny stage-2 model's training
step rate (forward, backward and optimiser step, random weights) is measured in the same run. A loader
starves training when its samples/s is below the training samples/s.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from omegaconf import OmegaConf

from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.datasets.builders.base import build_dataset
from minigpt.datasets.loader import BatchStream
from minigpt.synthetic.example_formats import write_examples
from minigpt.synthetic.shapes import generate

REPO = Path(__file__).resolve().parents[1]

TINY = REPO / "train_configs" / "tiny_stage2.yaml"


def tiny_config(folder: Path, tokenizer: Path, datasets: dict, image_size: int, batch_size: int):
    config = OmegaConf.load(TINY)
    config.model.tokenizer = str(tokenizer)
    config.model.ckpt = None
    config.datasets = {name: {"batch_size": batch_size, **section,
                              "vis_processor": {"train": {"name": "blip2_image_train", "image_size": image_size}}}
                       for name, section in datasets.items()}
    config.run.output_dir = str(folder / "out")
    path = folder / "config.yaml"
    OmegaConf.save(config, path)
    return load_config(path)


def loader_rate(dataset, collator, batch_size: int, workers: int, batches: int) -> float:
    """Samples/s over `batches` batches, after the first (worker start-up) is discarded."""
    stream = BatchStream("bench", dataset, batch_size, collator, seed=0, num_workers=workers)
    iterator = stream.batches()
    next(iterator)
    start = time.perf_counter()
    samples = sum(len(batch["ids"]) + len(batch["skipped"]) for batch in itertools.islice(iterator, batches))
    return samples / (time.perf_counter() - start)


def training_rate(config, batch_size: int, steps: int) -> float:
    """Samples/s of the tiny model's training step on real batches (median over steps after warm-up)."""
    torch.manual_seed(0)
    model = registry.get("model", config.model.arch).from_config(config.model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    name, section = next(iter(config.datasets.items()))
    dataset = build_dataset(name, section)
    batches = BatchStream(name, dataset, batch_size, collator_for(model, config.model.max_txt_len), seed=0).batches()
    times = []
    for step in range(steps + 2):
        batch = next(batches)
        start = time.perf_counter()
        model(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="images per layout")
    parser.add_argument("--image-size", type=int, default=64,
                        help="train processor size: 64 as the tiny config trains (224 for released runs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per loader")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "data_loading.json"))
    args = parser.parse_args()

    train_batch = min(32, args.images)  # the tiny stage-2 config's batch size
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        generate(folder / "shapes", stage1_images=0, train_images=args.images, test_images=0, grounding_images=0,
                 grounding_test_images=0)
        sections = write_examples(folder / "formats", images=args.images, shards=4)
        config = tiny_config(folder, folder / "shapes" / "tokenizer", sections, args.image_size, args.batch_size)
        collator = collator_for(registry.get("model", config.model.arch).from_config(config.model), config.model.max_txt_len)
        rows = []
        for name, section in config.datasets.items():
            dataset = build_dataset(name, section)
            rates = {workers: loader_rate(dataset, collator, args.batch_size, workers, args.batches) for workers in (1, 2)}
            rows.append({"dataset": name, "samples_per_s_1_worker": round(rates[1], 1),
                         "samples_per_s_2_workers": round(rates[2], 1)})
        train_config = tiny_config(folder, folder / "shapes" / "tokenizer",
                                   {"sharegpt4v": {"build_info": {"ann_path": str(folder / "shapes" / "train.json"),
                                                                  "image_path": str(folder / "shapes" / "images")}}},
                                   64, train_batch)
        train_rate = training_rate(train_config, train_batch, steps=8)

    print(f"{'loader':<18} {'1 worker':>10} {'2 workers':>10}   samples/s (image size {args.image_size}, batch {args.batch_size})")
    for row in rows:
        print(f"{row['dataset']:<18} {row['samples_per_s_1_worker']:>10.1f} {row['samples_per_s_2_workers']:>10.1f}")
    print(f"{'tiny stage-2 step':<18} {train_rate:>10.1f} {'':>10}   training samples/s (batch {train_batch}, 64 px)")
    slowest = min(min(r["samples_per_s_1_worker"], r["samples_per_s_2_workers"]) for r in rows)
    print(f"slowest loader / training rate: {slowest / train_rate:.2f}")
    result = {"benchmark": "data_loading", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "image_size": args.image_size,
              "batch_size": args.batch_size, "loaders": rows, "tiny_train_samples_per_s": round(train_rate, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
