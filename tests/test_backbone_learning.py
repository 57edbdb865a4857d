"""The MiniGPT recipe on a non-Llama pair learns as the Llama one does: the tiny Qwen2-architecture LLM,
prompted through its own ChatML template, over a tiny SigLIP tower (train_configs/tiny_qwen2_siglip.yaml),
trained through train.py on the synthetic shapes and scored by eval.py on the colour questions of
tests/test_learning.py, against the same controls and with the same margins: the best constant answer,
chance, another image's right answer, and the model given blank and shuffled images.
"""
import json
import os
import sys

import pytest

from conftest import TRAINING_TIMEOUT_S, free_port, run_script
from learning_controls import DATA_SEED, TRAINING_SEED, record
from minigpt.synthetic.shapes import generate
from minigpt.synthetic.tiny_backbones import write_tiny_backbones
from test_learning import (check_colours, colour_controls, colour_eval_options, eval_scores, first_and_last_loss,
                           write_colour_questions)

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.slow
def test_tiny_qwen2_siglip_learns_colours_with_the_llama_margins(tmp_path):
    data = tmp_path / "shapes"
    generate(data, seed=DATA_SEED, grounding_images=0, grounding_test_images=0)
    files = write_tiny_backbones(data)
    backbone = [f"model.vit_model={files['siglip-tiny']}", f"model.tokenizer={files['tokenizer-qwen2']}",
                *TRAINING_SEED]
    out = tmp_path / "output"
    run_script([TORCHRUN, "--nproc-per-node", "1", "--master-port", free_port(), "train.py",
                "--cfg-path", "train_configs/tiny_qwen2_siglip.yaml", "--options", *backbone,
                f"datasets.sharegpt4v.build_info.ann_path={data}/train.json",
                f"datasets.sharegpt4v.build_info.image_path={data}/images", f"run.output_dir={out}"],
               timeout=TRAINING_TIMEOUT_S)
    first, last = first_and_last_loss(out)
    assert last < 0.3 * first, f"loss {first:.3f} -> {last:.3f}"

    write_colour_questions(data)
    scores = eval_scores("eval_configs/tiny_qwen2_siglip_eval.yaml",
                         [*backbone, f"model.ckpt={out}", *colour_eval_options(data)], tmp_path / "eval")
    accuracy = {name: values["exact_match"] for name, values in scores.items()}
    controls = colour_controls(data)
    record("qwen2_siglip_colours", {**accuracy, **{f"{kind}/{key}": value for kind, values in controls.items()
                                                   for key, value in values.items()}})
    check_colours(accuracy, controls)
