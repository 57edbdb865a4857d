"""Fold one task adapter into the base weights and save the result as a plain checkpoint.

    python -m minigpt.merge_adapter --cfg-path eval_configs/X.yaml --adapter grounding --out output/merged

The eval config describes the model with its adapters (`model.adapters`, `model.ckpt`). The output
folder holds `model.safetensors` (every weight, W + B @ A * scale where the adapter applies) and a
`config.yaml` without adapters whose `model.ckpt` points at it, ready for demo.py --cfg-path.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from minigpt.common.config import load_config, save_config
from minigpt.models.inference import load_for_inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config of the model with its adapters")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    parser.add_argument("--adapter", required=True, help="name of the adapter to merge")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()

    config = load_config(args.cfg_path, args.options, for_training=False)
    if args.adapter not in config.model.adapters:
        raise SystemExit(f"{args.cfg_path}: model.adapters has no '{args.adapter}' "
                         f"(known: {', '.join(config.model.adapters) or 'none'})")
    model = load_for_inference(config, torch.device("cpu"), low_resource=False)  # merging needs full weights
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".model.safetensors.tmp"  # renamed into place once complete
    save_file(model.adapters.merged_state_dict(args.adapter), partial)
    os.replace(partial, out / "model.safetensors")
    config.model.adapters = {}
    config.model.adapter = "auto"
    config.model.ckpt = str(out.resolve())
    save_config(config, out / "config.yaml")
    print(f"merged adapter '{args.adapter}' into {out / 'model.safetensors'}; chat with: "
          f"python demo.py --cfg-path {out / 'config.yaml'}")


if __name__ == "__main__":
    main()
