"""The controls every learning test's model must beat, and the one assertion they share.

A learning test claims that a tiny model learned something *from the image*. Answers can score well
without it: one answer that is often right (the best constant), a guess among the answers seen
(chance), the right answer about another image (shuffled truth), or the model itself given a blank or
another question's image. The data-only controls are computed here from the training answers and the
held-out references with the test's own metric; the model's image controls come from eval.py runs on
blanked and shuffled images. `assert_beats` asks for a stated margin over the strongest of them all.

tests/test_learning_controls.py feeds each learning test's assertion the constant answers and the
shuffled-truth answers and checks that it fails, so no bar can be met without the image.
"""
from __future__ import annotations

import json
import os
import random
from typing import Callable, Sequence

# What a sweep (scripts/learning_sweep.sh) varies; each learning test reads them the same way.
TRAINING_SEED = [f"run.seed={os.environ['LEARNING_SEED']}"] if os.environ.get("LEARNING_SEED") else []
DATA_SEED = int(os.environ.get("LEARNING_DATA_SEED", "0"))
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")

# predictions, references -> the test's score (higher is better)
Metric = Callable[[Sequence, Sequence], float]


def derangement(count: int, seed: int = 0) -> list[int]:
    """A permutation with no fixed point: item i is paired with item order[i] != i, so every question
    is asked about another question's image (or given another question's truth)."""
    if count < 2:
        raise ValueError("shuffling needs at least two items")
    rng = random.Random(seed)
    order = list(range(count))
    while any(index == partner for index, partner in enumerate(order)):
        rng.shuffle(order)
    return order


def data_controls(train_answers: Sequence, references: Sequence, metric: Metric,
                  truths: Sequence | None = None) -> dict[str, float]:
    """Scores that need no model: `constant` (the best single answer among those seen in training),
    `chance` (one of those answers drawn uniformly, its expected score) and `shuffled_truth` (each
    question given the right answer of another question of the set). `truths` are the right answers
    in the training answers' form, one per reference (default: the references themselves)."""
    candidates = sorted(set(train_answers), key=str)
    per_answer = [metric([answer] * len(references), references) for answer in candidates]
    truths = list(references if truths is None else truths)
    order = derangement(len(truths))
    return {"constant": max(per_answer), "chance": sum(per_answer) / len(per_answer),
            "shuffled_truth": metric([truths[partner] for partner in order], references)}


def best_constant(train_answers: Sequence, references: Sequence, metric: Metric):
    """The single answer that scores best on the held-out set, for the test of the tests."""
    return max(sorted(set(train_answers), key=str), key=lambda answer: metric([answer] * len(references), references))


def assert_beats(name: str, ours: float, controls: dict[str, float], margin: float, floor: float = 0.0) -> None:
    """`ours` must be at least `floor` and at least `margin` above every control."""
    strongest = max(controls, key=controls.get)
    table = ", ".join(f"{key} {value:.3f}" for key, value in sorted(controls.items()))
    assert ours >= floor, f"{name}: {ours:.3f} under the floor {floor:.3f} ({table})"
    assert ours >= controls[strongest] + margin, (
        f"{name}: {ours:.3f} does not beat the strongest control, {strongest} {controls[strongest]:.3f}, "
        f"by {margin:.2f} ({table})")


def record(test: str, values: dict) -> None:
    """Append the run's numbers, with the seeds and kernel settings they came from, to the JSON Lines
    file named by LEARNING_RESULTS (the sweep's table is made from it); without it, print them."""
    settings = {"training_seed": os.environ.get("LEARNING_SEED", "config"), "data_seed": DATA_SEED,
                **{key: os.environ[key] for key in KERNEL_SETTINGS if key in os.environ}}
    line = json.dumps({"test": test, **settings, "values": values})
    print(line)
    if os.environ.get("LEARNING_RESULTS"):
        with open(os.environ["LEARNING_RESULTS"], "a") as results:
            results.write(line + "\n")
