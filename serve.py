"""`minigpt serve`, under the script name MiniGPT-4 users type:

    python serve.py --cfg-path eval_configs/X.yaml [--port 8000]

Every option of `minigpt serve --help` works here too.
"""
import sys

from minigpt.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
