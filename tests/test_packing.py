"""Packed batches (run.packing): several samples per row, positions restarting per sample, attention kept
within each sample; the same loss and gradients as padded batches, in a step and along a whole run."""
import json

import pytest
import torch

from conftest import REPO, losses, run_script, stage2_options
from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import first_fit_rows
from minigpt.conversation.template import ASSISTANT, USER

STAGE2 = "train_configs/tiny_stage2.yaml"
NO_DROPOUT = ["model.qformer_config.hidden_dropout_prob=0.0", "model.qformer_config.attention_probs_dropout_prob=0.0"]


def test_rows_are_filled_first_fit_longest_first():
    assert first_fit_rows([5, 3, 4, 2, 1], capacity=5) == [[0], [2, 4], [1, 3]]
    assert first_fit_rows([2, 2, 2], capacity=6) == [[0, 1, 2]]


def tiny_model(shapes_dir):
    config = load_config(REPO / STAGE2, stage2_options(shapes_dir) + ["model.ckpt=null", "model.parts.llm.mode=full",
                                                                      *NO_DROPOUT])
    torch.manual_seed(0)
    return registry.get("model", config.model.arch).from_config(config.model).eval()  # eval: no dropout


def samples(count: int = 6) -> list[dict]:
    """Image samples with answers of different lengths (so rows can share), one text-only sample."""
    torch.manual_seed(3)
    answers = ["red", "a small blue circle", "green", "a big yellow square at the top", "blue", "two shapes"]
    made = [{"id": str(i), "image": torch.randn(3, 64, 64), "turns": [(USER, "What is it?"), (ASSISTANT, answers[i])]}
            for i in range(count)]
    made[2] = {"id": "2", "image": None, "turns": [(USER, "Say a colour."), (ASSISTANT, "green")]}
    return made


def test_a_packed_batch_restarts_positions_and_keeps_images_in_slot_order(shapes_dir):
    from minigpt.conversation.collator import collator_for

    model = tiny_model(shapes_dir)
    batch_samples = samples()
    padded = collator_for(model)(batch_samples)
    assert collator_for(model, packing=True)(batch_samples)["input_ids"].shape == padded["input_ids"].shape  # no room
    packed = collator_for(model, packing=True, packing_length=2 * padded["input_ids"].shape[1])(batch_samples)
    assert packed["input_ids"].shape == (3, 2 * padded["input_ids"].shape[1])  # two samples a row
    assert packed["ids"] == padded["ids"] and packed["labels"].ne(-100).sum() == padded["labels"].ne(-100).sum()
    starts = (packed["position_ids"] == 0).sum().item()
    assert starts >= len(batch_samples)  # every sample starts at position 0 (and so does trailing padding)
    # The images follow the order of their slots row by row: the i-th slot run belongs to the i-th image.
    runs = [(row, col) for row in range(packed["image_slots"].shape[0]) for col in range(packed["image_slots"].shape[1])
            if packed["image_slots"][row, col] and (col == 0 or not packed["image_slots"][row, col - 1])]
    padded_tokens = [padded["input_ids"][i][padded["attention_mask"][i].bool()].tolist() for i in range(len(batch_samples))]
    owners = []
    for row, col in runs:
        start = col - packed["position_ids"][row, col].item()  # the sample's first column
        positions = packed["position_ids"][row, start:].tolist()
        length = next((n for n, position in enumerate(positions) if position != n), len(positions))  # its run of 0, 1, ...
        owners.append(padded_tokens.index(packed["input_ids"][row, start:start + length].tolist()))
    assert len(runs) == 5 and all(torch.equal(packed["images"][k], batch_samples[i]["image"])
                                  for k, i in enumerate(owners))


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(shapes_dir):
    from minigpt.conversation.collator import collator_for

    model = tiny_model(shapes_dir)
    results = {}
    for packing in (False, True):
        model.zero_grad()
        loss = model(collator_for(model, packing=packing, packing_length=100)(samples()))["loss"]
        loss.backward()
        results[packing] = loss.item(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert results[True][0] == pytest.approx(results[False][0], abs=1e-5)
    for key, grad in results[False][1].items():
        torch.testing.assert_close(results[True][1][key], grad, atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.slow
def test_a_packed_run_has_the_padded_runs_loss_curve_and_resumes(shapes_dir, tmp_path):
    steps = ["model.ckpt=null", "run.log_freq=1", "datasets.sharegpt4v.batch_size=8", "run.iters_per_epoch=8",
             "run.ckpt_freq=4", "run.warmup_steps=2", *NO_DROPOUT]
    curves = {}
    for name, packing in (("padded", "false"), ("packed", "true")):
        run_script(["train.py", "--cfg-path", STAGE2, "--options", *stage2_options(shapes_dir), *steps,
                    f"run.packing={packing}", "run.packing_length=200", f"run.output_dir={tmp_path / name}"])
        curves[name] = losses(tmp_path / name)
    assert list(curves["packed"]) == list(curves["padded"]) == list(range(1, 9))
    assert list(curves["packed"].values()) == pytest.approx(list(curves["padded"].values()), abs=1e-4)
    epoch_samples = [json.loads(line)["epoch_samples"] for name in curves
                     for line in (tmp_path / name / "log.jsonl").read_text().splitlines() if "epoch_samples" in line]
    assert epoch_samples[0] == epoch_samples[1]  # the same samples counted
    run_script(["train.py", "--cfg-path", STAGE2, "--options", *stage2_options(shapes_dir), *steps, "run.packing=true", "run.packing_length=200",
                f"run.output_dir={tmp_path / 'resumed'}", f"run.resume_ckpt_path={tmp_path / 'packed'}/checkpoint_0000004"])
    resumed = losses(tmp_path / "resumed")
    assert list(resumed) == [5, 6, 7, 8]
    assert list(resumed.values()) == pytest.approx([curves["packed"][step] for step in (5, 6, 7, 8)], abs=1e-5)
