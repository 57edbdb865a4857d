"""MiniGPT: train, finetune and chat with MiniGPT-4 / MiniGPT-v2 style multimodal LLMs."""

__version__ = "0.1.0"

from minigpt.common import moved as _moved

_moved.install()  # old import paths (minigpt.tools, minigpt.agents.paragraph, ...) keep working for a release
