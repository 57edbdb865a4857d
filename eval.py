"""`minigpt eval`, under the script name MiniGPT-4 users type:

    python eval.py --cfg-path eval_configs/X.yaml [--datasets a b]

Every option of `minigpt eval --help` works here too.
"""
import sys

from minigpt.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
