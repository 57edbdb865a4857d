"""The training benchmark's baseline (transformers' BLIP-2, bench/train_runners.py) does the same work as
ours: with our weights loaded through the export's mapping it gives the same loss and the same gradients
of the trained projection for the same batch, in float32, as each of our levers does. So a speed gap
in bench/train_throughput.py is a lever, not a difference in what is computed."""
import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO))

from bench.common import small_tokenizer  # noqa: E402
from bench.train_runners import RUNNERS, Baseline, batches, build_runners, model_config, part_attention  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return small_tokenizer(tmp_path_factory.mktemp("bench") / "tokenizer")


def loss_and_gradients(runner) -> tuple[float, list[torch.Tensor]]:
    """The runner's loss on its first batch and the gradients of its trained parameters (weight, bias)."""
    runner.optimizer.zero_grad(set_to_none=True)
    loss = runner.loss(runner.data[0])
    loss.backward()
    trained = [p for group in runner.optimizer.param_groups for p in group["params"]]
    gradients = sorted((p.grad.detach().clone() for p in trained), key=lambda g: g.ndim, reverse=True)
    runner.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), gradients


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_baseline_gives_ours_loss_and_gradients_for_the_same_batch(tokenizer, attn):
    cfg = model_config("tiny", tokenizer, attn)
    data = batches(cfg.image_size, "stage2", batch_size=4, words=12, count=1)
    runners = build_runners(cfg, RUNNERS, torch.device("cpu"), data)
    baseline = runners["baseline"]
    assert baseline.image_token_id < len(baseline.model.language_model.get_input_embeddings().weight)  # no new row
    assert all(runner.attention == part_attention(attn) for runner in runners.values())
    frozen = (baseline.model.vision_model, baseline.model.qformer, baseline.model.language_model)
    assert baseline.model.training and not any(module.training for module in frozen)  # no dropout where ours has none

    base_loss, base_gradients = loss_and_gradients(baseline)
    projection = runners["ours_plain"].model.llama_proj
    assert [tuple(g.shape) for g in base_gradients] == [tuple(p.shape) for p in projection.parameters()]
    for name in RUNNERS[1:]:
        loss, gradients = loss_and_gradients(runners[name])
        assert abs(loss - base_loss) <= TOLERANCE, (name, loss, base_loss)
        for ours, theirs in zip(gradients, base_gradients):
            assert (ours - theirs).abs().max() <= TOLERANCE, (name, float((ours - theirs).abs().max()))
        assert max(float(g.abs().max()) for g in gradients) > 100 * TOLERANCE  # gradients big enough to tell apart


def test_the_baseline_takes_each_part_in_ours_precision_once(tokenizer):
    """As on a GPU: ours' frozen ViT in half precision and LLM in bf16; ln_vision, the Q-Former and the
    trained projection in float32. The baseline's parts are cast to the same, not left in float32, and
    both take a step under bf16 autocast (the ViT's fp16 outside it), with about the same loss."""
    cfg = model_config("tiny", tokenizer)
    data = batches(cfg.image_size, "stage2", batch_size=2, words=8, count=1)
    runner = build_runners(cfg, ["ours_plain"], torch.device("cpu"), data)["ours_plain"]
    ours = runner.model
    ours.visual_encoder.half()
    ours.vision_dtype = torch.float16  # as from_config places a frozen ViT on a GPU
    ours.llama_model.bfloat16()
    baseline = Baseline(cfg, ours, torch.device("cpu"), data)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the GPU's mix of precisions, on the CPU
        losses = [float(side.loss(side.data[0])) for side in (runner, baseline)]
    assert abs(losses[0] - losses[1]) < 1e-3, losses
    expected = {"vision": "float16", "ln_vision": "float32", "qformer": "float32", "query_tokens": "float32",
                "projection": "float32", "llm": "bfloat16"}
    assert baseline.precision == expected
    model = baseline.model
    assert {p.dtype for p in model.vision_model.encoder.parameters()} == {torch.float16}
    assert {p.dtype for p in model.language_model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.language_projection.parameters()} == {torch.float32}
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["language_projection.weight",
                                                                                 "language_projection.bias"]
