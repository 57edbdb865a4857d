"""Evaluate a model on the benchmarks of an eval config's `evaluation_datasets` section.

    python eval.py --cfg-path eval_configs/X.yaml [--datasets a b] [--options key=value ...]
    torchrun --nproc-per-node N eval.py --cfg-path eval_configs/X.yaml      the questions split across ranks

Each section names a data set builder (as under `datasets:`) plus the metric, the question wording and
the generation length; see README.md. Predictions and scores go to run.output_dir (or run.save_path),
one folder per data set. Run it again after an interruption and it continues from the answers written.
"""
import argparse
import json

from minigpt.common.config import load_config
from minigpt.common.dist import cleanup
from minigpt.runners.eval_recipe import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config YAML with an evaluation_datasets section")
    parser.add_argument("--datasets", nargs="+", help="evaluate only these sections")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier answers instead of continuing")
    parser.add_argument("--options", nargs="+", default=[], help="overrides: key=value (e.g. model.ckpt=...)")
    args = parser.parse_args()

    config = load_config(args.cfg_path, args.options, for_training=False, for_evaluation=True,
                         evaluation_names=args.datasets)
    try:
        results = evaluate(config, args.cfg_path, args.datasets, args.overwrite)
    finally:
        cleanup()
    for result in results.values():
        print(json.dumps(result))


if __name__ == "__main__":
    main()
