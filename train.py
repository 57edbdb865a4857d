"""`minigpt train`, under the script name MiniGPT-4 users type:

    torchrun --nproc-per-node N train.py --cfg-path train_configs/X.yaml [--options key=value ...]

Every option of `minigpt train --help` works here too.
"""
import sys

from minigpt.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
