"""The LM head and loss only at labelled positions (models/scored_loss.py): the same loss and gradients as
transformers' computation over every position, in each part mode, chunked or not; answer scores too."""
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import IGNORE_INDEX, collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.models import scored_loss
from minigpt.models.scored_loss import rows_per_chunk

MODES = {"frozen LLM": ["model.parts.llm.mode=frozen"],
         "LoRA": ["model.parts.llm.mode=lora", "model.lora_r=4"],
         "full": ["model.parts.llm.mode=full", "model.parts.qformer.mode=full"]}


def build(shapes_dir, options: list[str]):
    config = load_config(REPO / "eval_configs/tiny_eval.yaml",
                         [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null", *options], for_training=False)
    torch.manual_seed(0)
    model = registry.get("model", "minigpt4").from_config(config.model)
    for key, param in model.named_parameters():
        if "lora_B" in key:  # zero at init: LoRA would have no effect on the loss
            torch.nn.init.normal_(param, std=0.05)
    return model.eval()  # no dropout, so that two passes compute the same function; gradients still flow


def batch(model):
    torch.manual_seed(1)
    samples = [{"id": "0", "image": torch.randn(3, 64, 64), "turns": [(USER, "What color is it?"), (ASSISTANT, "red")]},
               {"id": "1", "image": torch.randn(3, 64, 64),
                "turns": [(USER, "Describe it."), (ASSISTANT, "a big blue square at the top left of the image")]}]
    return collator_for(model)(samples)


def loss_and_grads(model, inputs) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(inputs)["loss"]
    loss.backward()
    return loss.item(), {key: param.grad.clone() for key, param in model.named_parameters() if param.grad is not None}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk_size", [3, 1024])
@pytest.mark.parametrize("path", ["gradients in the forward pass", "recomputed"])
def test_the_loss_and_gradients_are_the_full_computations(shapes_dir, mode, chunk_size, path, monkeypatch):
    model = build(shapes_dir, MODES[mode])
    inputs = batch(model)
    model.logits_where_scored, model.logits_chunk_size = True, chunk_size
    head_rows = []  # positions the LM head maps to logits, per call
    if path == "recomputed":  # the path of a head that is not a plain linear layer: chunks run again in backward
        monkeypatch.setattr(scored_loss, "fits_fused_loss", lambda head: False)
        hook = model.llama_model.get_output_embeddings().register_forward_hook(
            lambda module, args, output: head_rows.append(output.shape[:-1].numel()))
    else:
        logits_of = scored_loss.chunk_logits
        monkeypatch.setattr(scored_loss, "chunk_logits", lambda *args: head_rows.append(len(args[0])) or logits_of(*args))
    scored_loss_value, scored_grads = loss_and_grads(model, inputs)
    if path == "recomputed":
        hook.remove()
    labelled = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert max(head_rows) <= chunk_size and sum(head_rows) == labelled * (2 if path == "recomputed" else 1)
    assert labelled < inputs["labels"].numel() / 3
    model.logits_where_scored = False  # transformers' own loss over every position's logits
    full_loss, full_grads = loss_and_grads(model, inputs)
    assert scored_loss_value == pytest.approx(full_loss, abs=1e-5)
    assert scored_grads.keys() == full_grads.keys() and len(full_grads) >= 2
    assert any("llama_model" in key for key in full_grads) == (mode != "frozen LLM")
    for key, grad in full_grads.items():
        torch.testing.assert_close(scored_grads[key], grad, atol=1e-5, rtol=1e-4, msg=key)


def test_answer_scores_match_the_full_logits(shapes_dir):
    model = build(shapes_dir, [])
    model.logits_chunk_size = 4
    inputs = batch(model)
    with torch.no_grad():
        logits = model(inputs, with_loss=False)["logits"][:, :-1]  # [B, T-1, V]
    labels = inputs["labels"][:, 1:]
    token_losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    answered = labels != IGNORE_INDEX
    scores = model.answer_scores(inputs)
    torch.testing.assert_close(scores.losses("sum"), token_losses.sum(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.losses(), token_losses.sum(1) / answered.sum(1), atol=1e-5, rtol=0)
    likeliest = (logits.argmax(dim=-1) == labels) | ~answered  # [B, T-1]: every answer token the argmax
    assert scores.greedy.tolist() == likeliest.all(dim=1).tolist()


def test_a_batch_without_labels_gives_a_zero_loss_that_reaches_the_head(shapes_dir):
    model = build(shapes_dir, MODES["full"])
    inputs = batch(model)
    inputs["labels"][:] = IGNORE_INDEX
    loss = model(inputs)["loss"]
    loss.backward()
    assert loss.item() == 0.0
    assert model.llama_model.lm_head.weight.grad is not None  # DDP's all-reduce needs every rank's gradient


def test_default_chunks_hold_about_32_mib_of_logits():
    assert rows_per_chunk(32000) == 262  # a Llama-2 vocabulary: 262 x 32000 float32 logits = 32 MiB
    assert rows_per_chunk(128256) == 65
    assert rows_per_chunk(1000) == 1024 and rows_per_chunk(10**6) == 64  # the bounds
    assert rows_per_chunk(32000, 3) == 3  # a configured size wins


def test_under_bfloat16_autocast_both_paths_agree(shapes_dir, monkeypatch):
    """The GPU recipe trains under bf16 autocast: the gradients computed in the forward pass keep each
    tensor's dtype and match the recomputed path's."""
    model = build(shapes_dir, MODES["full"])
    inputs = batch(model)
    results = {}
    for path in ("gradients in the forward pass", "recomputed"):
        monkeypatch.setattr(scored_loss, "fits_fused_loss", lambda head, fused=path != "recomputed": fused)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[path] = loss_and_grads(model, inputs)
    (fused_loss, fused_grads), (recomputed_loss, recomputed_grads) = results.values()
    assert fused_loss == pytest.approx(recomputed_loss, rel=1e-2)
    head_key = next(key for key in fused_grads if key.endswith("lm_head.weight"))
    for key in (head_key, next(key for key in fused_grads if "llama_proj" in key or "projector" in key)):
        assert fused_grads[key].dtype == torch.float32
        torch.testing.assert_close(fused_grads[key], recomputed_grads[key], atol=2e-3, rtol=5e-2, msg=key)
