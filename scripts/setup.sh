#!/usr/bin/env bash
# Create .venv with everything MiniGPT needs (torch and torchvision as torch-pins.txt pins them; deepspeed
# without compiled ops). Safe to run again: an existing .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q -U pip
# [all]: gpu, web, eval, wandb, tensorboard, data, plot and dev, everything the full test suite runs.
DS_BUILD_OPS=0 python -m pip install -q -r torch-pins.txt -e '.[all]'
