"""Chat on one GPU: peak memory and decode speed of the demo path with the LLM in bf16, int8 and NF4.

    python -m bench.generate                                  # on a GPU: Llama-2-7B and EVA ViT-g shapes
    python -m bench.generate --shape tiny --device cpu        # the same steps at test size, on the CPU

Nothing is downloaded: a Llama-2-7B-shaped LLM with random weights is written once as a Hugging Face
folder (sharded safetensors, as the released folders are), and the shipped eval configs
(minigpt4_eval.yaml: Vicuna-7B with the Q-Former at 224 px; minigptv2_eval.yaml: Llama-2-7B with LoRA
at 448 px) point at it, with a random EVA ViT-g. Each mode runs in its own process, so each peak starts
from zero, and loads the model the way demo.py does (`load_model`), then:
- peak memory after loading, and after the first answer to a question about an image;
- prefill: seconds to the first new token of a prompt of the image plus a question;
- decode: new tokens per second after the first (summed over the batch), greedy, a fixed number of
  tokens, at batch 1 and 8 (--batch-sizes).
For MiniGPT-4 each mode also times what a user would assemble instead (the baseline, skipped with
--no-baseline): transformers' `Blip2ForConditionalGeneration` with the same shapes and the same
precision (its LLM's linear layers swapped for the same bitsandbytes ones in int8 and NF4), through its
own `generate`.
Memory and speed do not depend on the weights' values, so random weights measure what real ones would.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.common import LLAMA2_7B, REPO, report, run_child, small_tokenizer, write_result
from minigpt.config.loader import load_config
from minigpt.inference.chat import Chat, GenerationOptions
from minigpt.conversation.template import USER
from minigpt.inference.loading import Placement, load_model
from minigpt.inference.memory import peak_memory_gib
from minigpt.models.llm import quantize_linear_layers

CONFIGS = {  # (shape, arch) -> eval config
    ("7b", "minigpt4"): "eval_configs/minigpt4_eval.yaml",
    ("7b", "minigpt_v2"): "eval_configs/minigptv2_eval.yaml",
    ("tiny", "minigpt4"): "eval_configs/tiny_eval.yaml",
    ("tiny", "minigpt_v2"): "eval_configs/tiny_v2_eval.yaml",
}
MODES = {"bf16": (False, None), "int8": (True, 8), "nf4": (True, 4)}  # -> (low_resource, bits)
QUESTION = "Describe this image in detail."


def write_random_llm(folder: Path, shape: str, device: torch.device) -> Path:
    """A random LLM of the shape as a Hugging Face folder with a small trained tokenizer; kept for reuse."""
    from omegaconf import OmegaConf
    from transformers import AutoConfig, AutoModelForCausalLM

    from minigpt.models.tokenizer import load_tokenizer

    if (folder / "config.json").exists():
        return folder
    if shape == "7b":
        options = dict(LLAMA2_7B)
    else:
        options = dict(OmegaConf.to_container(OmegaConf.load(REPO / CONFIGS[("tiny", "minigpt_v2")]).model.llama_config))
    tokenizer = load_tokenizer(small_tokenizer(folder.parent / f"{folder.name}-tokenizer"))
    model_type = options.pop("model_type")
    options.setdefault("vocab_size", len(tokenizer))
    config = AutoConfig.for_model(model_type, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **options)
    print(f"writing a random {shape} LLM to {folder}", file=sys.stderr)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    partial = folder.parent / f"{folder.name}.partial"
    model.save_pretrained(partial, max_shard_size="2GB")
    tokenizer.save_pretrained(partial)
    partial.rename(folder)  # complete or absent: an interrupted write is redone
    return folder


def decode_speed(generate, new_tokens: int, batch_size: int, device: torch.device) -> tuple[float, float]:
    """-> (prefill seconds, decode tokens/s summed over the batch): `generate(count)` makes exactly
    `count` greedy tokens per sequence (the end token suppressed); best of two runs each;
    decode speed = batch_size * (new_tokens - 1) / (t_n - t_1)."""
    def timed(count: int) -> float:
        best = float("inf")
        for _ in range(2):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                generate(count)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        return best

    first, full = timed(1), timed(new_tokens)
    return first, batch_size * (new_tokens - 1) / (full - first)


def ours_generate(model, batch: dict, device: torch.device):
    """Our LLM's generate on our spliced embeddings, as MiniGPT.generate calls it, minus stop strings."""
    inputs_embeds = model.embed_inputs(batch["input_ids"].to(device), batch["image_slots"].to(device),
                                       batch["images"].to(device))
    attention_mask = batch["attention_mask"].to(device)

    def generate(count: int):
        output = model.llama_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            max_new_tokens=count, min_new_tokens=count, do_sample=False,
                                            pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.tokenizer.eos_token_id)
        assert output.shape[1] == count, f"generated {output.shape[1]} tokens, asked for {count}"
    return generate


def picture(size: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).rectangle([size // 4, size // 4, size // 2, size // 2], fill="red")
    return image


def run_baseline(args, config) -> dict:
    """transformers' BLIP-2 with our shapes (bench/common.py) in the same precision as `args.mode`, timed
    with its own generate. In int8 / NF4 its language model's linear layers are swapped for the same
    bitsandbytes layers as ours."""
    from bench.common import blip2_baseline

    device = torch.device(args.device)
    low_resource, bits = MODES[args.mode]
    loaded = load_model(config, Placement(low_resource=False))  # for its shapes and collator
    ours = loaded.model
    hf_model, image_token_id = blip2_baseline(ours)
    chat = Chat(ours, loaded.image_processor)
    chat.set_image(picture(ours.input_size))
    collator, pad_id, eos_id = chat.collator, ours.tokenizer.pad_token_id, ours.tokenizer.eos_token_id
    del ours
    start = time.perf_counter()
    hf_model.to(half_dtype(args.mode) if device.type == "cuda" else torch.float32)
    if low_resource:
        quantize_linear_layers(hf_model.language_model, bits, next(hf_model.parameters()).dtype)
    hf_model = hf_model.to(device).eval()
    load_s = time.perf_counter() - start
    loaded_gib = peak_memory_gib(device)
    speeds = {}
    for batch_size in args.batch_sizes:
        batch = collator.generation_batch([{"id": "b", "image": chat.image, "turns": [(USER, QUESTION)]}] * batch_size)
        input_ids = batch["input_ids"].masked_fill(batch["image_slots"], image_token_id).to(device)
        pixel_values = batch["images"].to(device, next(hf_model.parameters()).dtype)
        attention_mask = batch["attention_mask"].to(device)

        def generate(count: int):
            hf_model.generate(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                              max_new_tokens=count, min_new_tokens=count, do_sample=False, pad_token_id=pad_id,
                              eos_token_id=eos_id)
        prefill_s, tokens_per_s = decode_speed(generate, args.new_tokens, batch_size, device)
        speeds[batch_size] = {"prefill_s": round(prefill_s, 4), "decode_tokens_per_s": round(tokens_per_s, 1)}
    return {"model": "baseline", "mode": args.mode, **llm_layers(hf_model.language_model), "load_s": round(load_s, 1),
            "peak_gib_after_loading": round(loaded_gib, 3), "peak_gib_after_first_answer": None,
            "peak_gib_after_batches": round(peak_memory_gib(device), 3), "by_batch_size": speeds}


def half_dtype(mode: str) -> torch.dtype:
    return torch.bfloat16 if mode == "bf16" else torch.float16  # bitsandbytes int8 computes in fp16


def llm_layers(llm) -> dict:
    """What the LLM's linear layers are, and what its weights take."""
    weights = sum(t.numel() * t.element_size() for t in llm.state_dict().values() if isinstance(t, torch.Tensor))
    up_proj = next(module for name, module in llm.named_modules() if name.endswith("mlp.up_proj"))
    return {"llm_layer": f"{type(up_proj).__name__} {str(up_proj.weight.dtype).removeprefix('torch.')}",
            "llm_weights_gib": round(weights / 2**30, 3)}


def run_mode(args) -> dict:
    """One mode in this process: load as demo.py does, answer once, time decoding."""
    device = torch.device(args.device)
    options = [f"model.llama_model={args.llm}", "model.ckpt=null", "model.vit_weights=null", "model.q_former_model=null",
               "model.tokenizer=null", *args.options]
    config = load_config(REPO / CONFIGS[(args.shape, args.arch)], options, for_training=False)
    if args.model == "baseline":
        return run_baseline(args, config)
    low_resource, bits = MODES[args.mode]
    start = time.perf_counter()
    loaded = load_model(config, Placement(device, low_resource, bits, half_dtype=half_dtype(args.mode)))
    model = loaded.model
    load_s = time.perf_counter() - start
    loaded_gib = peak_memory_gib(device)

    chat = Chat(model, loaded.image_processor, GenerationOptions(max_new_tokens=args.new_tokens))
    chat.set_image(picture(model.input_size))
    start = time.perf_counter()
    with torch.no_grad():
        chat.ask(QUESTION)
    first_answer_s = time.perf_counter() - start
    answered_gib = peak_memory_gib(device)
    speeds = {}
    for batch_size in args.batch_sizes:
        batch = chat.collator.generation_batch([{"id": "b", "image": chat.image, "turns": [(USER, QUESTION)]}] * batch_size)
        with torch.no_grad():
            generate = ours_generate(model, batch, device)
        prefill_s, tokens_per_s = decode_speed(generate, args.new_tokens, batch_size, device)
        speeds[batch_size] = {"prefill_s": round(prefill_s, 4), "decode_tokens_per_s": round(tokens_per_s, 1)}
    return {"model": "ours", "mode": args.mode, **llm_layers(model.llama_model), "load_s": round(load_s, 1),
            "peak_gib_after_loading": round(loaded_gib, 3), "peak_gib_after_first_answer": round(answered_gib, 3),
            "first_answer_s": round(first_answer_s, 2), "peak_gib_after_batches": round(peak_memory_gib(device), 3),
            "by_batch_size": speeds, "image_tokens": model.num_image_tokens,
            "prompt_tokens": int(chat.collator.generation_batch([{"id": "n", "image": chat.image, "turns": [(USER, QUESTION)]}])
                                 ["attention_mask"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("7b", "tiny"), default="7b")
    parser.add_argument("--arch", nargs="+", choices=("minigpt4", "minigpt_v2"), default=["minigpt4", "minigpt_v2"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip transformers' BLIP-2 of the same shapes, run in each mode (minigpt4 only)")
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per timed answer")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="sequences decoded together")
    parser.add_argument("--work-dir", default="/tmp/minigpt-bench", help="where the random LLM folder is kept")
    parser.add_argument("--options", nargs="*", default=[], help="config overrides for every run: key=value")
    parser.add_argument("--out", help="JSON results (default bench/results/generate_<shape>.json)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--model", choices=("ours", "baseline"), default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--llm", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.mode:
        args.arch = args.arch[0]
        report(run_mode(args))
        return
    llm = write_random_llm(Path(args.work_dir) / f"llm-{args.shape}", args.shape, torch.device(args.device))
    torch.cuda.empty_cache()  # the random model is gone; give its memory back before the runs start
    rows = []
    for arch in args.arch:
        # transformers has no MiniGPT-v2 counterpart (no Q-Former, 4 tokens concatenated)
        models = ("ours", "baseline") if args.baseline and arch == "minigpt4" else ("ours",)
        for mode, model in ((mode, model) for mode in args.modes for model in models):
            command = ["-m", "bench.generate", "--model", model, "--mode", mode, "--arch", arch, "--shape", args.shape, "--llm", str(llm),
                       "--device", args.device, "--new-tokens", str(args.new_tokens), "--batch-sizes",
                       *map(str, args.batch_sizes), "--options", *args.options]
            rows.append({"arch": arch, **run_child(command, f"{arch} {model} {mode}")})
            print(f"{arch} {model} {mode}: done", file=sys.stderr)

    memory = "GPU allocated" if args.device.startswith("cuda") else "process resident"
    speed_columns = "".join(f" {f'prefill s b{b}':>12} {f'tokens/s b{b}':>12}" for b in args.batch_sizes)
    print(f"\n{'arch':<11} {'model':<9} {'mode':<5} {'LLM layers':<22} {'LLM GiB':>8} {'peak loaded':>12} {'peak answered':>14}"
          f"{speed_columns}   (peak = {memory} memory, GiB; {args.new_tokens} new tokens; b = batch size; "
          "baseline = transformers' BLIP-2, its 'answered' peak taken after the timed batches)")
    for row in rows:
        speeds = "".join(f" {row['by_batch_size'][str(b)]['prefill_s']:>12.3f} {row['by_batch_size'][str(b)]['decode_tokens_per_s']:>12.1f}"
                         for b in args.batch_sizes)
        print(f"{row['arch']:<11} {row['model']:<9} {row['mode']:<5} {row['llm_layer']:<22} {row['llm_weights_gib']:>8.2f} "
              f"{row['peak_gib_after_loading']:>12.2f} {row['peak_gib_after_first_answer'] or row['peak_gib_after_batches']:>14.2f}{speeds}")
    write_result(Path(args.out or REPO / "bench" / "results" / f"generate_{args.shape}.json"), "generate", args.device,
                 {"shape": args.shape, "peak_memory": memory, "new_tokens": args.new_tokens, "runs": rows})


if __name__ == "__main__":
    main()
