"""Serving a model over HTTP: the OpenAI-compatible API (openai_api.py, started by serve.py)."""
