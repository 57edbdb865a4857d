"""What the benchmarks share: the 7B shape, a small tokenizer, one process per measurement, the result file."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

LLAMA2_7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 vocab_size=32000)
H100_BF16_FLOPS = 989e12  # dense bf16 tensor-core peak of an H100 SXM


def small_tokenizer(folder: Path) -> Path:
    """A sentencepiece tokenizer trained on a few sentences: random-weight models need only token ids."""
    from minigpt.models.tokenizer import train_tokenizer

    texts = [f"a {colour} {shape} on the {side} of the image" for colour in ("red", "green", "blue", "yellow")
             for shape in ("square", "circle", "triangle") for side in ("left", "right", "top", "bottom")]
    templates = ["###Human: <Img><ImageHere></Img> Describe this image in detail. ###Assistant: ",
                 "[INST] <Img><ImageHere></Img> Describe the image briefly. [/INST] "]
    return train_tokenizer((texts + templates) * 4, folder, vocab_size=512)


def run_child(command: list[str], what: str) -> dict:
    """Run one measurement in its own process (so its peak memory starts from zero); -> its RESULT line."""
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        sys.exit(f"{what} failed:\n{result.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def report(result: dict) -> None:
    """The child's side of run_child."""
    print("RESULT " + json.dumps(result), flush=True)


def cpu_name() -> str:
    """The CPU's model name (platform.processor() is empty on many Linux machines)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_result(out: Path, benchmark: str, device: str, fields: dict) -> None:
    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name()
    result = {"benchmark": benchmark, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "device": device_name, "cpus": os.cpu_count(),
                          "torch": torch.__version__},
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **fields}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def blip2_baseline(ours, device: torch.device | str = "cpu"):
    """-> (Blip2ForConditionalGeneration, image_token_id): the model a user would assemble from
    transformers instead of ours, with the shapes of our built model `ours` (EVA ViT as BLIP-2's vision
    model, as the export writes it; the same Q-Former; a Llama language model), random weights, in
    float32, built on `device` (a 7B model's random initialisation takes minutes on the CPU, seconds on a
    GPU).

    The image positions need a token id. Where our LLM's vocabulary has ids the tokenizer never writes
    (a 32k Llama vocabulary over a small test tokenizer), the last of them marks the image, so both LLMs
    have the same rows and, with the same weights, the same softmax; otherwise a new id is added (as the
    export adds `<image>`), whose extra logit changes the loss slightly but not the work."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    from minigpt.models.hf_blip2 import blip2_vision_config

    llm = ours.llama_model.config
    image_token_id = llm.vocab_size - 1 if llm.vocab_size > len(ours.tokenizer) else llm.vocab_size
    text = {**llm.to_dict(), "vocab_size": max(llm.vocab_size, image_token_id + 1)}
    config = Blip2Config(vision_config=blip2_vision_config(ours.visual_encoder, ours.ln_vision).to_dict(),
                         qformer_config=ours.Qformer.config.to_dict(), text_config=text,
                         num_query_tokens=ours.query_tokens.shape[1], image_token_index=image_token_id)
    with torch.device(device):
        model = Blip2ForConditionalGeneration(config)
    # One layer_norm_eps serves BLIP-2's blocks and post_layernorm; ours has 1e-6 in the blocks and 1e-5
    # in ln_vision (hf_blip2.blip2_vision_config), so post_layernorm takes ln_vision's.
    model.vision_model.post_layernorm.eps = ours.ln_vision.eps
    return model, image_token_id
