"""Serving throughput: concurrent clients against the OpenAI-compatible server (`minigpt serve`'s app, on
uvicorn) with the tiny model, requests batched as they arrive against one request at a time, in the
same run (the same server code with --max-batch 1).

    python -m bench.serve                          # 8 clients, tiny model, on the CPU
    python -m bench.serve --clients 16 --requests 4 --rounds 3

Each client is a process of its own (as clients are in a deployment: their HTTP work does not share the
server's interpreter) and sends its requests one after another (an image and a question, greedy,
--max-tokens new tokens). Before each timed run every client sends one warm-up request (another image)
to that server, all at once, untimed. The two servers take turns over --rounds rounds, in alternating
order (one at a time first, then batched first, ...), so that neither always runs on a warmer or a
busier machine. Reported per server: the median over the rounds, with the lowest and highest, of the
completion tokens per second over all clients (the `usage` the API reports: the ids generated), the
requests per second and the mean latency of a request; and the batched / one-at-a-time ratio of each
round. The weights are random: speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

# Client processes import this module again (spawn): torch, uvicorn and minigpt are imported where the
# server side needs them, so that starting a client costs no model-library imports.

QUESTIONS = ["Describe this image in detail.", "What color is the circle?", "Which shapes do you see?",
             "Where is the square?"]
WARM_UP_SEED = 10_000  # warm-up images differ from the timed ones


def image_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def request_body(seed: int, question: str, max_tokens: int) -> dict:
    return {"model": "tiny", "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url(seed)}}, {"type": "text", "text": question}]}]}


def completion_tokens(http: httpx.Client, url: str, body: dict) -> int:
    """Post one request; -> the completion tokens its usage reports."""
    reply = http.post(f"{url}/v1/chat/completions", json=body)
    reply.raise_for_status()
    return reply.json()["usage"]["completion_tokens"]


def client(index: int, requests: int, max_tokens: int, tasks, results) -> None:
    """One client process, for every run: takes a server's URL from `tasks`, sends one warm-up request and
    puts "ready", then on "go" sends its requests one after another, putting (latency, completion tokens)
    of each to `results`. None ends it."""
    bodies = [request_body(index * 100 + number, QUESTIONS[(index + number) % len(QUESTIONS)], max_tokens)
              for number in range(requests)]
    warm_up = request_body(WARM_UP_SEED + index, QUESTIONS[index % len(QUESTIONS)], max_tokens)
    with httpx.Client(timeout=600) as http:
        while (url := tasks.get()) is not None:
            completion_tokens(http, url, warm_up)
            results.put("ready")
            assert tasks.get() == "go"
            for body in bodies:
                start = time.perf_counter()
                tokens = completion_tokens(http, url, body)
                results.put((time.perf_counter() - start, tokens))


def start_server(served) -> str:
    """`served` on uvicorn in a thread of this process; -> its base URL."""
    import uvicorn

    from minigpt.serving.openai_api import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def timed_run(url: str, clients: list, requests: int, results) -> dict:
    """Every client warms the server up, then all send their `requests` at once; -> this run's figures."""
    for tasks in clients:
        tasks.put(url)
    for _ in clients:
        assert results.get() == "ready"
    start = time.perf_counter()
    for tasks in clients:
        tasks.put("go")
    replies = [results.get() for _ in range(len(clients) * requests)]
    elapsed = time.perf_counter() - start
    tokens = sum(count for _, count in replies)
    return {"requests": len(replies), "completion_tokens": tokens, "seconds": round(elapsed, 3),
            "tokens_per_s": round(tokens / elapsed, 1), "requests_per_s": round(len(replies) / elapsed, 2),
            "mean_latency_s": round(statistics.mean(seconds for seconds, _ in replies), 3)}


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}


def summary(max_batch: int, each_round: list[dict]) -> dict:
    """One server's runs -> the median and range of each figure, and the runs themselves."""
    return {"max_batch": max_batch, "requests": each_round[0]["requests"],
            "completion_tokens": int(statistics.median(run["completion_tokens"] for run in each_round)),
            **{name: spread([run[name] for run in each_round])
               for name in ("tokens_per_s", "requests_per_s", "mean_latency_s")},
            "each_round": each_round}


def load_servers(args) -> dict[str, tuple[int, str]]:
    """The tiny model (random weights) served twice, one request at a time and batched; name -> (max batch, URL)."""

    from bench.common import REPO, small_tokenizer
    from minigpt.config.loader import load_config
    from minigpt.inference.loading import load_model
    from minigpt.serving.openai_api import ServedModel

    tokenizer = small_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", [f"model.tokenizer={tokenizer}", "model.ckpt=null",
                                                                  "model.end_sym=</s>"], for_training=False)
    loaded = load_model(config)
    servers = {}
    for name, max_batch in (("one at a time", 1), ("batched", args.max_batch)):
        served = ServedModel("tiny", loaded.model, loaded.image_processor, Path(tempfile.gettempdir()), max_batch=max_batch)
        servers[name] = (max_batch, start_server(served))
    return servers


def print_table(runs: dict, ratio: dict, args) -> None:
    def figure(values: dict, digits: int) -> str:
        return f"{values['median']:.{digits}f} ({values['min']:.{digits}f}-{values['max']:.{digits}f})"

    print(f"\n{'server':<14} {'requests':>8} {'tokens':>7} {'tokens/s':>22} {'requests/s':>19} {'latency s':>19}"
          f"   (median (min-max) of {args.rounds} rounds; {args.clients} clients, tiny model on the CPU)")
    for name, row in runs.items():
        print(f"{name:<14} {row['requests']:>8} {row['completion_tokens']:>7} {figure(row['tokens_per_s'], 1):>22} "
              f"{figure(row['requests_per_s'], 2):>19} {figure(row['mean_latency_s'], 3):>19}")
    print(f"batched / one at a time: {figure(ratio, 2)}x tokens per second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=8, help="the batched server's largest batch")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each server, in alternating order (at least 3)")
    parser.add_argument("--out", help="JSON results (default bench/results/serve_tiny.json)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds: at least 3, for a median and its spread")
    servers = load_servers(args)
    processes = multiprocessing.get_context("spawn")
    results = processes.Queue()
    clients = [processes.Queue() for _ in range(args.clients)]
    workers = [processes.Process(target=client, args=(index, args.requests, args.max_tokens, tasks, results))
               for index, tasks in enumerate(clients)]
    for worker in workers:
        worker.start()
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    order = []
    for round_number in range(args.rounds):
        names = list(servers) if round_number % 2 == 0 else list(servers)[::-1]
        order.append(names)
        for name in names:
            runs[name].append(timed_run(servers[name][1], clients, args.requests, results))
    for tasks in clients:
        tasks.put(None)
    for worker in workers:
        worker.join()
    ratios = [round(batched["tokens_per_s"] / alone["tokens_per_s"], 2)
              for batched, alone in zip(runs["batched"], runs["one at a time"])]
    rows = {name: summary(servers[name][0], each_round) for name, each_round in runs.items()}
    ratio = {**spread(ratios), "each_round": ratios}
    print_table(rows, ratio, args)
    from bench.common import REPO, write_result

    write_result(Path(args.out or REPO / "bench" / "results" / "serve_tiny.json"), "serve", "cpu",
                 {"clients": args.clients, "requests_per_client": args.requests, "max_tokens": args.max_tokens,
                  "warm_up_requests_per_client": 1, "rounds": args.rounds, "order": order, "runs": rows, "ratio": ratio})


if __name__ == "__main__":
    main()
