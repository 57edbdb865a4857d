"""Whole training runs through train.py, as a user starts them: a few stage-2 steps plain, under DeepSpeed
ZeRO-2 and as QLoRA (the LLM in NF4 with LoRA on top), each reporting seconds per step and, on a GPU,
the peak memory the run logged.

    python -m bench.train_steps                              # on a GPU: EVA ViT-g, Q-Former, Llama-2-7B shape
    python -m bench.train_steps --shape tiny --device cpu    # the same runs at test size (gpu_check.sh --dry-run)

Nothing is downloaded: the weights are random (speed and memory do not depend on their values) and the
data is the synthetic shapes set (dataset/synthetic_shapes.py) at the model's image size. Stage 2 as
MiniGPT-4 trains it: ViT, Q-Former and LLM frozen, the projector trained, bf16 autocast on a GPU; QLoRA
trains LoRA on the quantised LLM as well.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import LLAMA2_7B, REPO, write_result
from minigpt.synthetic.shapes import generate

SHAPES = {  # image size, model overrides
    "tiny": (64, []),
    "7b": (224, ["model.vit_config={}", "model.qformer_config={}", "model.num_query_token=32", "model.max_txt_len=160",
                 "model.llama_config={" + ", ".join(f"{key}: {value}" for key, value in LLAMA2_7B.items()) + "}"]),
}
STAGE2 = ["model.ckpt=null", "model.parts.vision_encoder.mode=frozen", "model.parts.qformer.mode=frozen",
          "model.parts.llm.mode=frozen", "model.parts.projector.mode=full", "run.log_freq=1", "run.warmup_steps=1",
          "run.num_workers=2", "datasets.sharegpt4v.batch_size=8"]
RUNS = {  # launcher, extra options
    "plain": ("python", []),
    "zero2": ("deepspeed", ["run.deepspeed_config=train_configs/deepspeed/zero2.json"]),
    "qlora_nf4": ("python", ["model.low_resource=true", "model.low_resource_bits=4", "model.parts.llm.mode=lora",
                             "model.lora_r=16"]),
}


def launch(launcher: str, device: str) -> list[str]:
    if launcher == "deepspeed":  # one rank: on the CPU the launcher's --num_gpus counts processes
        return [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "1", "--master_port",
                str(29600 + os.getpid() % 300)]
    return [sys.executable]


def run(name: str, args, data: Path, work: Path) -> dict:
    launcher, extra = RUNS[name]
    image_size, shape = SHAPES[args.shape]
    out = work / name
    options = [f"model.tokenizer={data}/tokenizer", f"model.image_size={image_size}", *shape, *STAGE2, *extra,
               f"datasets.sharegpt4v.build_info.ann_path={data}/train.json",
               f"datasets.sharegpt4v.build_info.image_path={data}/images",
               f"datasets.sharegpt4v.vis_processor.train.image_size={image_size}",
               f"run.iters_per_epoch={args.steps + 1}", f"run.ckpt_freq={args.steps + 1}", f"run.output_dir={out}",
               f"run.device={args.device.split(':')[0]}", f"run.amp={args.device.startswith('cuda')}"]
    command = [*launch(launcher, args.device), "train.py", "--cfg-path", "train_configs/tiny_stage2.yaml", "--options",
               *options]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-4000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [entry for entry in log if "loss" in entry][1:]  # the first step pays for warm-up
    batch = 8
    row = {"run": name, "steps": len(steps), "step_s": round(batch / statistics.median(e["samples_per_s"] for e in steps), 4),
           "samples_per_s": round(statistics.median(e["samples_per_s"] for e in steps), 2),
           "loss": round(steps[-1]["loss"], 4)}
    if "peak_memory_gib" in steps[-1]:
        row["peak_memory_gib"] = round(max(e["peak_memory_gib"] for e in steps), 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=tuple(SHAPES), default="7b")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--runs", nargs="+", choices=tuple(RUNS), default=list(RUNS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--out", help="JSON results (default bench/results/train_steps_<shape>.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "shapes"
        generate(data, seed=0, stage1_images=8, train_images=48, test_images=4, image_size=SHAPES[args.shape][0],
                 shard_size=8, grounding_images=4, grounding_test_images=2)
        rows = [run(name, args, data, Path(folder)) for name in args.runs]
    print(f"\n{'run':<10} {'steps':>5} {'s/step':>8} {'samples/s':>10} {'peak GiB':>9}   ({args.shape} shape on {args.device})")
    for row in rows:
        print(f"{row['run']:<10} {row['steps']:>5} {row['step_s']:>8.3f} {row['samples_per_s']:>10.2f} "
              f"{row.get('peak_memory_gib', float('nan')):>9.2f}")
    write_result(Path(args.out or REPO / "bench" / "results" / f"train_steps_{args.shape}.json"), "train_steps",
                 args.device, {"shape": args.shape, "runs": rows})


if __name__ == "__main__":
    main()
