"""`minigpt chat`, under the script name MiniGPT-4 users type:

    python demo.py --cfg-path eval_configs/X.yaml [--image PATH] [--gpu-id 0]

Every option of `minigpt chat --help` works here too.
"""
import sys

from minigpt.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["chat", *sys.argv[1:]]))
