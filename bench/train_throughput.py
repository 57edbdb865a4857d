"""Training step throughput: our MiniGPT-4 against the same model assembled from transformers' BLIP-2.

    python -m bench.train_throughput --preset tiny --device cpu     # tiny_stage2 shapes, on the CPU
    python -m bench.train_throughput --preset small --device cpu    # ViT 12x384, Q-Former 4x256, LLM 8x512, 32k vocabulary
    python -m bench.train_throughput --preset 7b                    # on a GPU: EVA ViT-g, Q-Former, Llama-2-7B shape
    python -m bench.train_throughput --preset 7b --attn flash_attention_2   # both LLMs on flash-attention

The baseline is what a user would write instead: `Blip2ForConditionalGeneration` with a Llama language
model of identical shapes, the vision model, Q-Former and LLM frozen, the projection trained by AdamW,
bf16 autocast on a GPU; brought to ours' footing (ours' weights, each part in ours' precision, frozen
parts in eval mode, the same attention implementation in every part: bench/train_runners.py), so that
it does the same work, as tests/test_bench_train_parity.py checks loss for loss and gradient for
gradient. Ours is the recipe's step: `from_config` as train.py builds it, AdamW over the trainable
groups, the same autocast. Both see the same batches (random images, the same token ids and labels).
Two stages, as MiniGPT-4 trains:
- stage1: short captions (15 to 25 words) in big batches;
- stage2: instruction answers (10 to 190 words: a phrase to a paragraph) in the stage-2 template, batch 12.

Ours runs with each lever added in turn, so that each one's share of the gain shows: `ours_plain` (the
LM head over every position, padded rows, as the baseline computes), `ours_scored` (the LM head only at
labelled positions, model.logits_where_scored) and `ours` (also packed rows, run.packing).

Timing: every runner lives in one process and takes --warmup untimed steps; then --rounds rounds, each
running every runner for --steps timed steps in a row, the order reversed from one round to the next
(baseline first, then last, ...), so that a drift of the machine's speed (a shared CPU) falls on the
runners alike. A run's figure is its median step; reported is the median of the runs and their spread
(min, max); ours / baseline is taken round by round (runs close in time), median and spread.
Also reported: tokens/s (attention-mask tokens); each runner's loss on the first batch before any
step (the same for all where they do the same work); peak memory during the steps, from a short run
of each runner alone in its own process: the GPU's allocations, or on the CPU the process's peak
resident set less what it held before building anything (the Python runtime and libraries, about
0.9 GiB either way; the whole figure is kept as process_peak_gib), so both count weights, data,
optimizer and the steps' activations; on a GPU the model FLOPs utilisation.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import H100_BF16_FLOPS, REPO, report, run_child, small_tokenizer, write_result
from bench.train_runners import LEVERS, PRESETS, RUNNERS, batches, build_runners, model_config
from minigpt.inference.memory import peak_memory_gib, reset_peak_memory


def step_flops(model, batch: dict) -> float:
    """Model FLOPs of one step: 2 per weight per token forward in every part, plus the LLM's backward to
    its inputs (2 more; no weight gradients in frozen parts); the projector's weight gradients are noise."""
    vit_params = sum(p.numel() for p in model.visual_encoder.parameters())
    qformer_params = sum(p.numel() for p in model.Qformer.parameters()) if model.Qformer is not None else 0
    llm_params = sum(p.numel() for p in model.llama_model.parameters())
    images, tokens = batch["images"].shape[0], int(batch["attention_mask"].sum())
    vit_tokens = model.visual_encoder.patch_embed.num_patches + 1
    return 2 * vit_params * vit_tokens * images + 2 * qformer_params * model.num_image_tokens * images + 4 * llm_params * tokens


def train_step(runner, batch: dict, device: torch.device) -> float:
    """One training step of `runner` (under bf16 autocast on a GPU); -> its seconds."""
    on_gpu = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
    if on_gpu:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with autocast:
        loss = runner.loss(batch)
    loss.backward()
    runner.optimizer.step()
    runner.optimizer.zero_grad(set_to_none=True)
    if on_gpu:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def first_losses(runners: dict, device: torch.device) -> dict[str, float]:
    """Each runner's loss on its first batch, before any step: equal where the runners do the same work
    (all float32 on the CPU; bf16 on a GPU moves the digits a little)."""
    on_gpu = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        return {name: round(float(runner.loss(runner.data[0])), 6) for name, runner in runners.items()}


def timed_rounds(runners: dict, warmup: int, steps: int, rounds: int, device: torch.device) -> dict[str, list[list[float]]]:
    """-> per runner, per round, the seconds of each timed step. Warm-up takes turns step by step; then
    each round runs every runner for `steps` steps in a row, in RUNNERS' order in even rounds and the
    reverse in odd ones, so that no runner always runs first (or last) in a drifting machine."""
    taken = dict.fromkeys(runners, 0)

    def run(name: str, count: int) -> list[float]:
        runner, seconds = runners[name], []
        for _ in range(count):
            seconds.append(train_step(runner, runner.data[taken[name] % len(runner.data)], device))
            taken[name] += 1
        return seconds

    for _ in range(warmup):
        for name in runners:
            run(name, 1)
    times = {name: [] for name in runners}
    for index in range(rounds):
        for name in (list(runners) if index % 2 == 0 else list(reversed(runners))):
            times[name].append(run(name, steps))
    return times


def runner_row(name: str, runner, per_round: list[list[float]], batch_size: int, tokens: float) -> dict:
    """One runner's figures: the median of its runs (each run's median step) and their spread."""
    steps = [statistics.median(seconds) for seconds in per_round]
    samples = [batch_size / step for step in steps]
    step = statistics.median(steps)
    return {"model": name, "rows": statistics.mean(b["input_ids"].shape[0] for b in runner.data),
            "rounds": len(per_round), "steps": len(per_round[0]), "step_s": round(step, 4),
            "samples_per_s": round(statistics.median(samples), 2), "samples_per_s_min": round(min(samples), 2),
            "samples_per_s_max": round(max(samples), 2), "samples_per_s_by_round": [round(s, 3) for s in samples],
            "tokens_per_s": round(tokens / step, 1), "attention": runner.attention, "precision": runner.precision}


def measure(args) -> list[dict]:
    """One child: every runner taking turns (speed), or one runner alone (speed and peak memory)."""
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    runtime_gib = 0.0 if on_gpu else peak_memory_gib(device)  # the CPU's figure leaves out the libraries
    cfg = model_config(args.preset, Path(args.tokenizer), args.attn)
    batch_size, words = PRESETS[args.preset][2][args.stage]
    data = batches(cfg.image_size, args.stage, batch_size, words)
    runners = build_runners(cfg, RUNNERS if args.model == "all" else [args.model], device, data)
    tokens = statistics.mean(int(b["attention_mask"].sum()) for b in next(iter(runners.values())).data)
    ours = [runner for name, runner in runners.items() if name != "baseline"]  # ours_plain first: padded rows
    flops = step_flops(ours[0].model, ours[0].data[0]) if ours else None
    losses = first_losses(runners, device)
    reset_peak_memory(device)  # the peak counts the runners' weights, optimizer and steps, not what was freed
    times = timed_rounds(runners, args.warmup, args.steps, args.rounds, device)
    rows = []
    for name, per_round in times.items():
        row = {"stage": args.stage, "attn": args.attn, "batch_size": batch_size,
               "tokens_per_sample": round(tokens / batch_size, 1),
               **runner_row(name, runners[name], per_round, batch_size, tokens), "first_loss": losses[name]}
        if len(runners) == 1:
            row["peak_memory_gib"] = round(peak_memory_gib(device) - runtime_gib, 3)
            if not on_gpu:
                row["process_peak_gib"] = round(peak_memory_gib(device), 3)
        if on_gpu and flops is not None:
            row["mfu"] = round(flops / row["step_s"] / H100_BF16_FLOPS, 4)
        rows.append(row)
    return rows


def stage_rows(args, stage: str, tokenizer: Path) -> list[dict]:
    """The runners taking turns for the speed figures, then each alone for a step for its peak memory
    (the processes that measure memory hold one runner each)."""
    def child(model: str, warmup: int, steps: int, rounds: int) -> list[dict]:
        command = ["-m", "bench.train_throughput", "--preset", args.preset, "--stage", stage, "--model", model, "--device", args.device,
                   "--warmup", str(warmup), "--steps", str(steps), "--rounds", str(rounds), "--tokenizer", str(tokenizer),
                   "--attn", args.attn]
        return run_child(command, f"{stage} {model}")["rows"]

    rows = child("all", args.warmup, args.steps, args.rounds)
    for row in rows:
        alone = child(row["model"], 1, 1, 1)[0]
        row["peak_memory_gib"] = alone["peak_memory_gib"]
        if "process_peak_gib" in alone:
            row["process_peak_gib"] = alone["process_peak_gib"]
    return rows


def round_ratios(numerator: dict, denominator: dict) -> dict:
    """Throughput of one runner over another, round by round (the runs of a round ran close in time):
    the median and the spread."""
    ratios = [a / b for a, b in zip(numerator["samples_per_s_by_round"], denominator["samples_per_s_by_round"])]
    return {"throughput": round(statistics.median(ratios), 3), "throughput_min": round(min(ratios), 3),
            "throughput_max": round(max(ratios), 3)}


def ratios_of(rows: list[dict], stages: list[str]) -> dict:
    """Per stage: ours / baseline throughput (round by round) and peak memory, and each lever's step (the
    variant over the one before it), so that each one's share of the gain shows."""
    ratios = {}
    for stage in stages:
        by_name = {row["model"]: row for row in rows if row["stage"] == stage}
        base, steps, previous = by_name["baseline"], {}, by_name["baseline"]
        for name in LEVERS:
            steps[name] = {**round_ratios(by_name[name], previous),
                           "peak_memory": round(by_name[name]["peak_memory_gib"] / previous["peak_memory_gib"], 3)}
            previous = by_name[name]
        ratios[stage] = {**round_ratios(by_name["ours"], base),
                         "peak_memory": round(by_name["ours"]["peak_memory_gib"] / base["peak_memory_gib"], 3),
                         "steps": steps}
    return ratios


def print_table(rows: list[dict], ratios: dict, preset: str, device: str) -> None:
    mfu = "mfu" in rows[0]
    print(f"\n{'stage':<7} {'model':<12} {'batch':>5} {'rows':>5} {'tok/sample':>10} {'samples/s':>10} {'min-max':>13} "
          f"{'tokens/s':>10} {'peak GiB':>9} {'first loss':>10}" + (f" {'MFU':>6}" if mfu else "")
          + f"   ({preset} preset on {device}; median of {rows[0]['rounds']} runs of {rows[0]['steps']} steps)")
    for row in rows:
        spread = f"{row['samples_per_s_min']:.2f}-{row['samples_per_s_max']:.2f}"
        print(f"{row['stage']:<7} {row['model']:<12} {row['batch_size']:>5} {row['rows']:>5.1f} {row['tokens_per_sample']:>10} "
              f"{row['samples_per_s']:>10.2f} {spread:>13} {row['tokens_per_s']:>10.1f} {row['peak_memory_gib']:>9.2f} "
              f"{row['first_loss']:>10.4f}" + (f" {row['mfu']:>6.1%}" if mfu else ""))
    for stage, ratio in ratios.items():
        steps = ", ".join(f"{name} {step['throughput']:.2f}x ({step['throughput_min']:.2f}-{step['throughput_max']:.2f}) "
                          f"speed / {step['peak_memory']:.2f}x memory" for name, step in ratio["steps"].items())
        print(f"{stage}: ours / baseline throughput {ratio['throughput']:.2f}x ({ratio['throughput_min']:.2f}-"
              f"{ratio['throughput_max']:.2f} over the rounds), peak memory {ratio['peak_memory']:.2f}x "
              f"(each over the one before: {steps})")
    first = next(iter(rows))
    print(f"attention per part: {first['attention']}; precision per part: {first['precision']} (the same for every runner)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), default="7b")
    parser.add_argument("--stages", nargs="+", choices=("stage1", "stage2"), default=["stage1", "stage2"])
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each runner before the rounds")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (a runner's turn in a round)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each runner, the order reversed each round")
    parser.add_argument("--attn", choices=("sdpa", "flash_attention_2", "eager"), default="sdpa",
                        help="the LLMs' attention (flash_attention_2: packed rows take its varlen path)")
    parser.add_argument("--out", help="JSON results (default bench/results/train_throughput_<preset>.json)")
    parser.add_argument("--stage", choices=("stage1", "stage2"), help=argparse.SUPPRESS)  # one measurement, in a child
    parser.add_argument("--model", choices=(*RUNNERS, "all"), help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:
        report({"rows": measure(args)})
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = small_tokenizer(Path(folder) / "tokenizer")
        for stage in args.stages:
            rows += stage_rows(args, stage, tokenizer)
            print(f"{stage}: " + ", ".join(f"{r['model']} {r['samples_per_s']} samples/s" for r in rows
                                           if r["stage"] == stage), file=sys.stderr)
    ratios = ratios_of(rows, args.stages)
    print_table(rows, ratios, args.preset, args.device)
    out = Path(args.out or REPO / "bench" / "results" / f"train_throughput_{args.preset}.json")
    write_result(out, "train_throughput", args.device, {"preset": args.preset, "warmup": args.warmup, "steps": args.steps,
                                                         "rounds": args.rounds, "runs": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
