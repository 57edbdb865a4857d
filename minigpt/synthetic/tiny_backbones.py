"""Tiny random-weight backbones of today's kinds, written as their hub folders hold them, beside a
synthetic data set, so that MiniGPT's recipe on a Qwen2.5-style LLM with a SigLIP tower and MiniGPT-v2's
on a Llama-3-style LLM (train_configs/tiny_qwen2_siglip.yaml, tiny_llama3_v2.yaml) train offline.

    DIR/tokenizer-qwen2/   DIR/tokenizer-llama3/   tokenizers in those families' styles (family_tokenizers.py)
    DIR/siglip-tiny/       a SigLIP model (vision and text towers) with its preprocessor_config.json

    python dataset/tiny_backbones.py --data data/shapes
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

from minigpt.synthetic.family_tokenizers import corpus_of, write_family_tokenizer

TINY_SIGLIP = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=8)


def write_tiny_siglip(out: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    """A SigLIP folder at `image_size` pixels (8-pixel patches), SigLIP's normalisation (mean = std = 0.5)."""
    torch.manual_seed(seed)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    SiglipModel(SiglipConfig(vision_config={**TINY_SIGLIP, "image_size": image_size}, text_config=text)
                ).save_pretrained(str(out))
    SiglipImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                         image_std=[0.5] * 3).save_pretrained(str(out))
    return Path(out)


def write_tiny_backbones(data_dir: str | Path) -> dict[str, Path]:
    """The two family tokenizers, trained on the data set's train.json, and the tiny SigLIP folder."""
    data_dir = Path(data_dir)
    texts = corpus_of(data_dir / "train.json")
    return {"tokenizer-qwen2": write_family_tokenizer("qwen2", texts, data_dir / "tokenizer-qwen2"),
            "tokenizer-llama3": write_family_tokenizer("llama", texts, data_dir / "tokenizer-llama3"),
            "siglip-tiny": write_tiny_siglip(data_dir / "siglip-tiny")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write tiny Qwen2 / Llama-3 tokenizers and a tiny SigLIP tower "
                                                 "beside a synthetic data set.")
    parser.add_argument("--data", default="data/shapes", help="a data set folder holding train.json")
    args = parser.parse_args(argv)
    for name, path in write_tiny_backbones(args.data).items():
        print(f"{name}: {path}")
