"""Inference: load a model for answering from a config, and the chat engine that drives it (whole and
streamed answers, batches from a file, multiple-choice scoring). Chat, web, serve, eval, the agents, the
paragraph writer and the benchmarks all come through here; model code never imports it."""
