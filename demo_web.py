"""`minigpt web`, under the script name MiniGPT-4 users type:

    python demo_web.py --cfg-path eval_configs/X.yaml [--port 7860]

Every option of `minigpt web --help` works here too.
"""
import sys

from minigpt.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["web", *sys.argv[1:]]))
