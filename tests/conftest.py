"""Shared fixtures: a small synthetic-shapes data set with its tokenizer, and tiny-config helpers."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt.conversation.collator import collator_for
from minigpt.synthetic.shapes import generate

REPO = Path(__file__).resolve().parents[1]

# In CI (CI=true) a skipped browser test fails, and every other skip is listed at the end of the run
# ("skipped in CI: <test>: <reason>"); the hooks are in ci_skips.py, where a test can run them alone.
from ci_skips import pytest_configure, pytest_runtest_makereport, pytest_terminal_summary  # noqa: E402,F401
# A run fails if any test wrote into the checkout's data/ or output/ (checkout_guard.py).
from checkout_guard import pytest_sessionfinish, pytest_sessionstart  # noqa: E402,F401

os.environ.setdefault("WANDB_MODE", "offline")


LEARNING = ["test_tool_learning.py", "test_paragraph_learning.py", "test_face_learning.py", "test_learning.py",
            "test_backbone_learning.py"]


def pytest_collection_modifyitems(items: list) -> None:
    """Under pytest -n the workers take tests in this order: the learning tests longest first, then the
    other slow ones, then the rest, so that no long test starts late and ends the run alone."""
    def rank(item) -> int:
        return LEARNING.index(item.path.name) if item.path.name in LEARNING else \
            len(LEARNING) + (item.get_closest_marker("slow") is None)

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def cpu_threads(request, monkeypatch):
    """Workers side by side (pytest -n) share the cores: each test runs on one thread, also in the scripts
    it starts. The learning tests' thresholds hold on one thread and on all (scripts/learning_sweep.sh)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """400 stage-1 images in 4 shards, 200 training and 40 test images."""
    out = tmp_path_factory.mktemp("shapes")
    generate(out, seed=0, stage1_images=400, train_images=200, test_images=40, shard_size=100, grounding_images=100,
             grounding_test_images=20)
    return out


def data_options(data_dir: Path) -> list[str]:
    """--options that point the tiny configs at a generated data set."""
    return [
        f"model.tokenizer={data_dir}/tokenizer",
        f"datasets.cc_sbu.build_info.storage={data_dir}/shards/shapes-{{000000..000003}}.tar",
    ]


def stage2_options(data_dir: Path) -> list[str]:
    return [
        f"model.tokenizer={data_dir}/tokenizer",
        f"datasets.sharegpt4v.build_info.ann_path={data_dir}/train.json",
        f"datasets.sharegpt4v.build_info.image_path={data_dir}/images",
    ]


def losses(output_dir: Path) -> dict[int, float]:
    """Step -> loss; a resumed run re-logs steps after its checkpoint, and the last entry wins."""
    curve = {}
    for line in (output_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            curve[record["step"]] = record["loss"]
    return curve


def fit_answers(model, samples: list[dict], steps: int = 30, lr: float = 3e-3):
    """The model with its LLM trained on `samples` (each ending with its answer turn) until it says those
    answers, so that greedy decoding has clear answers to give; -> the model, in eval mode."""
    batch = collator_for(model)(samples)
    for param in model.llama_model.parameters():
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.llama_model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    return model.eval()


def free_port() -> str:
    """A port no one listens on now, for a torchrun rendezvous: tests may run side by side (pytest -n)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


# A learning test's training stage: a guard against a hung run, not a speed target (one stage took
# 15 minutes on a 2-core machine loaded by other jobs, where it takes 5 alone).
TRAINING_TIMEOUT_S = 1800


def run_script(args: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a repository script the way a user does; fail with its output if it fails."""
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture()
def torch_state():
    """An in-process run sets torch's thread count and seed: both are put back for the tests after it."""
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


@pytest.fixture(scope="session")
def formats(tmp_path_factory) -> dict:
    """Small examples of every annotation layout (dataset/example_formats.py), as config sections."""
    from minigpt.synthetic.example_formats import write_examples

    return write_examples(tmp_path_factory.mktemp("formats"), images=12)


def dataset_config(tmp_path: Path, data_dir: Path, datasets: dict, base: str = "train_configs/tiny_stage2.yaml",
                   **run):
    """The tiny stage-2 model with `datasets` ({name: section}) instead of its own, written and loaded."""
    from omegaconf import OmegaConf

    from minigpt.config.loader import load_config

    config = OmegaConf.load(REPO / base)
    config.model.tokenizer = str(data_dir / "tokenizer")
    config.model.ckpt = None
    config.datasets = {name: {"batch_size": 2, "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 64}},
                              **section} for name, section in datasets.items()}
    config.run.output_dir = str(tmp_path / "out")
    for key, value in run.items():
        config.run[key] = value
    path = tmp_path / "config.yaml"
    OmegaConf.save(config, path)
    return load_config(path), path
