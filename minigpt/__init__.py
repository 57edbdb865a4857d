"""MiniGPT: train, finetune and chat with MiniGPT-4 / MiniGPT-v2 style multimodal LLMs."""

__version__ = "0.1.0"
