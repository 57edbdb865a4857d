"""One table of the figures in benchmark result files (bench/gpu_check.sh prints it at the end).

    python -m bench.summary bench/results/train_throughput_gpu.json bench/results/generate_gpu.json ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def training_lines(result: dict) -> list[str]:
    lines = []
    for row in result["runs"]:
        mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
        attn = f" ({row['attn']})" if row.get("attn", "sdpa") != "sdpa" else ""
        spread = f" ({row['samples_per_s_min']:.2f}-{row['samples_per_s_max']:.2f})" if "samples_per_s_min" in row else ""
        lines.append(f"train {row['stage']} {row['model']}{attn}: {row['samples_per_s']:.2f}{spread} samples/s, "
                     f"peak {row['peak_memory_gib']:.2f} GiB{mfu}")
    for stage, ratio in result["ratios"].items():
        spread = f" ({ratio['throughput_min']:.2f}-{ratio['throughput_max']:.2f})" if "throughput_min" in ratio else ""
        lines.append(f"train {stage} ours / baseline: {ratio['throughput']:.2f}x{spread} throughput, "
                     f"{ratio['peak_memory']:.2f}x peak memory")
    return lines


def generation_lines(result: dict) -> list[str]:
    lines = []
    for run in result["runs"]:
        speeds = ", ".join(f"batch {size}: {numbers['decode_tokens_per_s']:.1f} tokens/s"
                           for size, numbers in run["by_batch_size"].items())
        peak = run["peak_gib_after_first_answer"] or run["peak_gib_after_batches"]  # the baseline times no first answer
        lines.append(f"chat {run['arch']} {run['model']} {run['mode']}: peak {peak:.2f} GiB; decode {speeds}")
    return lines


def train_steps_lines(result: dict) -> list[str]:
    return [f"train.py {row['run']}: {row['step_s']:.3f} s/step, {row['samples_per_s']:.2f} samples/s"
            + (f", peak {row['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in row else "")
            for row in result["runs"]]


READERS = {"train_throughput": training_lines, "generate": generation_lines, "train_steps": train_steps_lines}


def main() -> None:
    for path in sys.argv[1:]:
        result = json.loads(Path(path).read_text())
        print(f"# {result['benchmark']} on {result['machine']['device']} ({path})")
        for line in READERS[result["benchmark"]](result):
            print(f"  {line}")


if __name__ == "__main__":
    main()
