"""What other tools load from MiniGPT by entry point: lmms-eval's `minigpt` model (lmms_eval_model.py)."""
