"""Train a MiniGPT model.

    torchrun --nproc-per-node N train.py --cfg-path train_configs/X.yaml [--options key=value ...]
    deepspeed --num_gpus N train.py --cfg-path ... --options run.deepspeed_config=train_configs/deepspeed/zero2.json

Also runs as a plain `python train.py ...` (one process). The config is validated before any model
is built; see README.md for its sections.
"""
import argparse

from minigpt.common import registry
from minigpt.common.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="train config YAML")
    parser.add_argument("--options", nargs="+", default=[], help="overrides: key=value (e.g. run.init_lr=1e-5)")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's; LOCAL_RANK is read
    args = parser.parse_args()

    config = load_config(args.cfg_path, args.options)
    recipe = registry.get("runner", config.run.runner)(config)
    recipe.setup()
    try:
        recipe.train()
    finally:
        recipe.close()


if __name__ == "__main__":
    main()
