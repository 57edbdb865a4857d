"""Serving throughput: concurrent clients against the OpenAI-compatible server (`minigpt serve`'s app, on
uvicorn) with the tiny model, requests batched as they arrive against one request at a time, in the
same run (the same server code with --max-batch 1).

    python bench/serve.py                          # 8 clients, tiny model, on the CPU
    python bench/serve.py --clients 16 --requests 4

Each client is a process of its own (as clients are in a deployment: their HTTP work does not share the
server's interpreter) and sends its requests one after another (an image and a question, greedy,
--max-tokens new tokens); reported: completion tokens per second over all clients, requests per second,
and the mean latency of a request. The weights are random: speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, small_tokenizer, write_result  # noqa: E402
from minigpt.cli.options import image_processor_for  # noqa: E402
from minigpt.config.loader import load_config  # noqa: E402
from minigpt.models.inference import load_for_inference  # noqa: E402
from minigpt.serving.openai_api import ServedModel, create_app  # noqa: E402

QUESTIONS = ["Describe this image in detail.", "What color is the circle?", "Which shapes do you see?",
             "Where is the square?"]


def image_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def start_server(served: ServedModel) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def client(url: str, index: int, requests: int, max_tokens: int, go, results) -> None:
    """One client process: says it is ready, then sends its requests one after another once `go` is set;
    (latency, tokens) of each to `results`."""
    bodies = []
    for number in range(requests):
        question = QUESTIONS[(index + number) % len(QUESTIONS)]
        bodies.append({"model": "tiny", "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url(index * 100 + number)}},
            {"type": "text", "text": question}]}]})
    with httpx.Client(timeout=600) as http:
        results.put("ready")
        go.wait()
        for body in bodies:
            start = time.perf_counter()
            reply = http.post(f"{url}/v1/chat/completions", json=body)
            reply.raise_for_status()
            results.put((time.perf_counter() - start, reply.json()["usage"]["completion_tokens"]))


def measure(model, image_processor, max_batch: int, args) -> dict:
    served = ServedModel("tiny", model, image_processor, Path(tempfile.gettempdir()), max_batch=max_batch)
    server, url = start_server(served)
    processes = multiprocessing.get_context("spawn")
    go, queue = processes.Event(), processes.Queue()
    clients = [processes.Process(target=client, args=(url, index, args.requests, args.max_tokens, go, queue))
               for index in range(args.clients)]
    for process in clients:
        process.start()
    for _ in clients:
        assert queue.get() == "ready"
    start = time.perf_counter()
    go.set()
    results = [queue.get() for _ in range(args.clients * args.requests)]
    elapsed = time.perf_counter() - start
    for process in clients:
        process.join()
    server.should_exit = True
    tokens = sum(count for _, count in results)
    return {"max_batch": max_batch, "requests": len(results), "completion_tokens": tokens,
            "tokens_per_s": round(tokens / elapsed, 1), "requests_per_s": round(len(results) / elapsed, 2),
            "mean_latency_s": round(statistics.mean(seconds for seconds, _ in results), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=8, help="the batched server's largest batch")
    parser.add_argument("--out", help="JSON results (default bench/results/serve_tiny.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = small_tokenizer(Path(folder) / "tokenizer")
        config = load_config(REPO / "eval_configs/tiny_eval.yaml", [f"model.tokenizer={tokenizer}", "model.ckpt=null",
                                                                      "model.end_sym=</s>"], for_training=False)
        torch.manual_seed(0)
        model = load_for_inference(config, torch.device("cpu"))
        rows = {name: measure(model, image_processor_for(config), max_batch, args)
                for name, max_batch in (("one at a time", 1), ("batched", args.max_batch))}
    ratio = round(rows["batched"]["tokens_per_s"] / rows["one at a time"]["tokens_per_s"], 2)
    print(f"\n{'server':<14} {'requests':>8} {'tokens':>7} {'tokens/s':>9} {'requests/s':>10} {'latency s':>9}"
          f"   ({args.clients} clients, tiny model on the CPU)")
    for name, row in rows.items():
        print(f"{name:<14} {row['requests']:>8} {row['completion_tokens']:>7} {row['tokens_per_s']:>9.1f} "
              f"{row['requests_per_s']:>10.2f} {row['mean_latency_s']:>9.3f}")
    print(f"batched / one at a time: {ratio:.2f}x tokens per second")
    write_result(Path(args.out or REPO / "bench" / "results" / "serve_tiny.json"), "serve", "cpu",
                 {"clients": args.clients, "requests_per_client": args.requests, "max_tokens": args.max_tokens,
                  "runs": rows, "ratio": ratio})


if __name__ == "__main__":
    main()
