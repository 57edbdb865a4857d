"""Training step throughput: our MiniGPT-4 against the same model assembled from transformers' BLIP-2.

    python bench/train_throughput.py --preset tiny --device cpu     # tiny_stage2 shapes, on the CPU
    python bench/train_throughput.py --preset small --device cpu    # ViT 12x384, Q-Former 4x256, LLM 8x512, 32k vocabulary
    python bench/train_throughput.py --preset 7b                    # on a GPU: EVA ViT-g, Q-Former, Llama-2-7B shape
    python bench/train_throughput.py --preset 7b --attn flash_attention_2   # both LLMs on flash-attention

The baseline is what a user would write instead: `Blip2ForConditionalGeneration` with a Llama language
model of identical shapes, the vision model, Q-Former and LLM frozen with requires_grad_(False), the
projection trained by AdamW, bf16 autocast on a GPU. Ours is the recipe's step: `from_config` as
train.py builds it, AdamW over the trainable groups, the same autocast. Both see the same batches
(random weights, random images, the same token ids and labels). Two stages, as MiniGPT-4 trains:
- stage1: short captions (15 to 25 words) in big batches;
- stage2: instruction answers (10 to 190 words: a phrase to a paragraph) in the stage-2 template, batch 12.

Ours runs with each lever added in turn, so that each one's share of the gain shows: `ours_plain` (the
LM head over every position, padded rows, as the baseline computes), `ours_scored` (the LM head only at
labelled positions, model.logits_where_scored) and `ours` (also packed rows, run.packing).
Reported: samples/s, tokens/s (attention-mask tokens), peak memory during the steps: the GPU's
allocations, or on the CPU the process's peak resident set less what it held before building anything
(the Python runtime and libraries, about 0.9 GiB either way; the whole figure is kept as
process_peak_gib), so both count weights, data, optimizer and the steps' activations; on a GPU the
model FLOPs utilisation; and ours / baseline. Times are medians over --steps steps after --warmup
steps. On a GPU each model runs alone in its own process; on a (shared, drifting) CPU the two take turns
step by step in one process, and peak memory comes from a short run of each alone.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    H100_BF16_FLOPS,
    LLAMA2_7B,
    REPO,
    blip2_baseline,
    report,
    run_child,
    small_tokenizer,
    write_result,
)
from minigpt.common import registry  # noqa: E402
from minigpt.config.loader import load_config  # noqa: E402
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER  # noqa: E402
from minigpt.models.inference import peak_memory_gib, reset_peak_memory  # noqa: E402

PRESETS = {  # config the model section comes from, its overrides, and per stage: (batch size, answer words)
    "tiny": ("train_configs/tiny_stage2.yaml", ["model.max_txt_len=200"], {"stage1": (32, 20), "stage2": (12, 100)}),
    "small": ("train_configs/tiny_stage2.yaml", [
        "model.max_txt_len=300", "model.image_size=224", "model.num_query_token=32",
        "datasets.sharegpt4v.vis_processor.train.image_size=224",
        "model.vit_config={patch_size: 14, embed_dim: 384, depth: 12, num_heads: 6, mlp_ratio: 4.0}",
        "model.qformer_config={hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 1024, "
        "cross_attention_frequency: 2}",
        "model.llama_config={model_type: llama, hidden_size: 512, intermediate_size: 1376, num_hidden_layers: 8, "
        "num_attention_heads: 8, num_key_value_heads: 8, max_position_embeddings: 1024, vocab_size: 32000}"],
        {"stage1": (32, 20), "stage2": (12, 100)}),
    "7b": ("train_configs/minigpt4_stage2_finetune.yaml", ["model.llama_model=null", "model.vit_weights=null",
                                                           "model.q_former_model=null"], {"stage1": (64, 20), "stage2": (12, 100)}),
}
FROZEN = ["model.parts.vision_encoder.mode=frozen", "model.parts.qformer.mode=frozen", "model.parts.llm.mode=frozen",
          "model.parts.projector.mode=full", "model.ckpt=null", "model.prompt_path=null"]


def model_config(preset: str, tokenizer: Path, attn: str = "sdpa"):
    path, overrides, _ = PRESETS[preset]
    options = [*overrides, *FROZEN, f"model.tokenizer={tokenizer}", f"model.attn_implementation={attn}"]
    if preset == "7b":
        options += [f"model.llama_config.{key}={value}" for key, value in LLAMA2_7B.items()]
    return load_config(REPO / path, options, for_training=False).model


def batches(image_size: int, stage: str, batch_size: int, words: int, count: int = 3) -> list[list[dict]]:
    """The samples of `count` batches: random images and text of the stage's length."""
    generator = torch.Generator().manual_seed(0)
    vocabulary = "red green blue yellow square circle triangle left right top bottom of the image a on".split()
    question = "Describe this image in detail." if stage == "stage2" else "Describe the image briefly."
    result = []
    for _ in range(count):
        samples = []
        spread = words * 9 // 10 if stage == "stage2" else words // 4
        for index in range(batch_size):
            length = words + int(torch.randint(-spread, spread + 1, (1,), generator=generator))
            answer = " ".join(vocabulary[int(i)] for i in torch.randint(len(vocabulary), (length,), generator=generator))
            samples.append({"id": str(index), "image": torch.randn(3, image_size, image_size, generator=generator),
                            "turns": [(USER, question), (ASSISTANT, answer)]})
        result.append(samples)
    return result


LEVERS = {  # our variants: (LM head only at labelled positions, packed rows)
    "ours_plain": (False, False), "ours_scored": (True, False), "ours": (True, True)}
RUNNERS = ["baseline", *LEVERS]


class Ours:
    def __init__(self, cfg, device: torch.device, compute_dtype: torch.dtype, levers: tuple[bool, bool], data: list):
        torch.manual_seed(0)
        self.model = registry.get("model", cfg.arch).from_config(cfg, device, compute_dtype).train()
        self.model.logits_where_scored = levers[0]
        self.optimizer = torch.optim.AdamW(self.model.param_groups(0.05, {}), lr=1e-5)
        self.data = [collator_for(self.model, packing=levers[1])(samples) for samples in data]

    def loss(self, batch: dict) -> torch.Tensor:
        return self.model(batch)["loss"]


class Baseline:
    """transformers' BLIP-2 with a Llama language model of the same shapes; frozen parts as a user freezes them."""

    def __init__(self, cfg, ours_model, device: torch.device, data: list):
        self.data = [collator_for(ours_model)(samples) for samples in data]
        model, self.image_token_id = blip2_baseline(ours_model, cfg.image_size, cfg.num_query_token, device)
        model.language_model.set_attn_implementation(cfg.attn_implementation)  # ours' attention kernel
        self.model = model.to(device).train()
        for name, param in self.model.named_parameters():
            param.requires_grad_(name.startswith("language_projection."))
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-5)
        self.device = device

    def loss(self, batch: dict) -> torch.Tensor:
        input_ids = batch["input_ids"].masked_fill(batch["image_slots"], self.image_token_id).to(self.device)
        return self.model(pixel_values=batch["images"].to(self.device), input_ids=input_ids,
                          attention_mask=batch["attention_mask"].to(self.device), labels=batch["labels"].to(self.device)).loss


def step_flops(model, batch: dict) -> float:
    """Model FLOPs of one step: 2 per weight per token forward in every part, plus the LLM's backward to
    its inputs (2 more; no weight gradients in frozen parts); the projector's weight gradients are noise."""
    vit_params = sum(p.numel() for p in model.visual_encoder.parameters())
    qformer_params = sum(p.numel() for p in model.Qformer.parameters()) if model.Qformer is not None else 0
    llm_params = sum(p.numel() for p in model.llama_model.parameters())
    images, tokens = batch["images"].shape[0], int(batch["attention_mask"].sum())
    vit_tokens = model.visual_encoder.patch_embed.num_patches + 1
    return 2 * vit_params * vit_tokens * images + 2 * qformer_params * model.num_image_tokens * images + 4 * llm_params * tokens


def timed_steps(runners: dict, warmup: int, steps: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per training step of each runner, the runners taking turns step by step, so that a drift
    in the machine's speed (a shared CPU) falls on all of them alike."""
    on_gpu = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else contextlib.nullcontext
    times = {name: [] for name in runners}
    for index in range(warmup + steps):
        for name, runner in runners.items():
            batch = runner.data[index % len(runner.data)]
            if on_gpu:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with autocast():
                loss = runner.loss(batch)
            loss.backward()
            runner.optimizer.step()
            runner.optimizer.zero_grad(set_to_none=True)
            if on_gpu:
                torch.cuda.synchronize(device)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def measure(args) -> list[dict]:
    """One child: one runner alone (speed and peak memory), or `all` taking turns (speed only)."""
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    runtime_gib = 0.0 if on_gpu else peak_memory_gib(device)  # the CPU's figure leaves out the libraries
    cfg = model_config(args.preset, Path(args.tokenizer), args.attn)
    batch_size, words = PRESETS[args.preset][2][args.stage]
    data = batches(cfg.image_size, args.stage, batch_size, words)
    reference = Ours(cfg, device, torch.bfloat16 if on_gpu else torch.float32, LEVERS["ours_plain"], data)
    flops = step_flops(reference.model, reference.data[0])
    tokens = statistics.mean(int(b["attention_mask"].sum()) for b in reference.data)
    runners = {}
    for name in RUNNERS if args.model == "all" else [args.model]:
        runners[name] = (Baseline(cfg, reference.model, device, data) if name == "baseline" else
                         Ours(cfg, device, torch.bfloat16 if on_gpu else torch.float32, LEVERS[name], data))
    del reference
    reset_peak_memory(device)  # the peak counts the runners' weights, optimizer and steps, not the reference
    times = timed_steps(runners, args.warmup, args.steps, device)
    rows = []
    for name, seconds in times.items():
        step = statistics.median(seconds)
        row = {"stage": args.stage, "model": name, "attn": args.attn, "batch_size": batch_size, "tokens_per_sample": round(tokens / batch_size, 1),
               "rows": statistics.mean(b["input_ids"].shape[0] for b in runners[name].data),
               "step_s": round(step, 4), "samples_per_s": round(batch_size / step, 2), "tokens_per_s": round(tokens / step, 1)}
        if len(runners) == 1:
            row["peak_memory_gib"] = round(peak_memory_gib(device) - runtime_gib, 3)
            if not on_gpu:
                row["process_peak_gib"] = round(peak_memory_gib(device), 3)
        if on_gpu:
            row["mfu"] = round(flops / step / H100_BF16_FLOPS, 4)
        rows.append(row)
    return rows


def stage_rows(args, stage: str, tokenizer: Path) -> list[dict]:
    def child(model: str, warmup: int, steps: int) -> list[dict]:
        command = [__file__, "--preset", args.preset, "--stage", stage, "--model", model, "--device", args.device,
                   "--warmup", str(warmup), "--steps", str(steps), "--tokenizer", str(tokenizer), "--attn", args.attn]
        return run_child(command, f"{stage} {model}")["rows"]

    if args.device.startswith("cuda"):  # steady timings: each runner alone, speed and memory in one run
        return [row for name in RUNNERS for row in child(name, args.warmup, args.steps)]
    rows = child("all", args.warmup, args.steps)  # a shared CPU drifts: the runners take turns,
    for row in rows:  # then each runs alone for its peak memory
        alone = child(row["model"], 1, 1)[0]
        row["peak_memory_gib"], row["process_peak_gib"] = alone["peak_memory_gib"], alone["process_peak_gib"]
    return rows


def ratios_of(rows: list[dict], stages: list[str]) -> dict:
    """Per stage: ours / baseline throughput and peak memory, and each lever's step (the variant over the one
    before it), so that each one's share of the gain shows."""
    ratios = {}
    for stage in stages:
        by_name = {row["model"]: row for row in rows if row["stage"] == stage}
        base, steps, previous = by_name["baseline"], {}, by_name["baseline"]
        for name in LEVERS:
            steps[name] = {"throughput": round(by_name[name]["samples_per_s"] / previous["samples_per_s"], 3),
                           "peak_memory": round(by_name[name]["peak_memory_gib"] / previous["peak_memory_gib"], 3)}
            previous = by_name[name]
        ratios[stage] = {"throughput": round(by_name["ours"]["samples_per_s"] / base["samples_per_s"], 3),
                         "peak_memory": round(by_name["ours"]["peak_memory_gib"] / base["peak_memory_gib"], 3),
                         "steps": steps}
    return ratios


def print_table(rows: list[dict], ratios: dict, preset: str, device: str) -> None:
    mfu = "mfu" in rows[0]
    print(f"\n{'stage':<7} {'model':<12} {'batch':>5} {'rows':>5} {'tok/sample':>10} {'samples/s':>10} {'tokens/s':>10} "
          f"{'peak GiB':>9}" + (f" {'MFU':>6}" if mfu else "") + f"   ({preset} preset on {device})")
    for row in rows:
        print(f"{row['stage']:<7} {row['model']:<12} {row['batch_size']:>5} {row['rows']:>5.1f} {row['tokens_per_sample']:>10} "
              f"{row['samples_per_s']:>10.2f} {row['tokens_per_s']:>10.1f} {row['peak_memory_gib']:>9.2f}"
              + (f" {row['mfu']:>6.1%}" if mfu else ""))
    for stage, ratio in ratios.items():
        steps = ", ".join(f"{name} {step['throughput']:.2f}x speed / {step['peak_memory']:.2f}x memory"
                          for name, step in ratio["steps"].items())
        print(f"{stage}: ours / baseline throughput {ratio['throughput']:.2f}x, peak memory {ratio['peak_memory']:.2f}x "
              f"(each over the one before: {steps})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), default="7b")
    parser.add_argument("--stages", nargs="+", choices=("stage1", "stage2"), default=["stage1", "stage2"])
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
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
    write_result(Path(args.out or REPO / "bench" / "results" / f"train_throughput_{args.preset}.json"), "train_throughput",
                 args.device, {"preset": args.preset, "warmup": args.warmup, "steps": args.steps, "runs": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
