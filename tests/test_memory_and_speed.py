"""Memory and speed switches must not change the maths: gradient checkpointing, fused attention."""
import pytest
import torch

from test_model import batch_for, build, tiny_config

NO_DROPOUT = ["model.qformer_config.hidden_dropout_prob=0.0", "model.qformer_config.attention_probs_dropout_prob=0.0",
              "model.lora_dropout=0.0"]


@pytest.mark.parametrize("llm_mode", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(shapes_dir, llm_mode):
    options = ["model.parts.vision_encoder.mode=full", f"model.parts.llm.mode={llm_mode}", "model.lora_r=4", *NO_DROPOUT]
    plain = build(tiny_config(shapes_dir, *options)).train()
    checkpointed = build(tiny_config(shapes_dir, *options, "model.use_grad_checkpoint=true",
                                     "model.use_grad_checkpoint_llm=true")).train()
    assert checkpointed.visual_encoder.grad_checkpointing and checkpointed.llama_model.is_activation_checkpointing
    assert not plain.visual_encoder.grad_checkpointing
    batch = batch_for(plain, torch.randn(2, 3, 64, 64), questions=("What color?", "Which shape?"), answers=("red", "a circle"))
    losses = []
    for model in (plain, checkpointed):
        loss = model(batch)["loss"]
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    gradients = {name: p.grad for name, p in plain.named_parameters() if p.requires_grad}
    assert gradients and all(g is not None for g in gradients.values())
    assert any("lora_A" in name for name in gradients) == (llm_mode == "lora")
    for name, param in checkpointed.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.allclose(param.grad, gradients[name], atol=1e-6, rtol=1e-4), name


def test_every_attention_runs_through_pytorch_sdpa(shapes_dir):
    model = build(tiny_config(shapes_dir))
    assert model.llama_model.config._attn_implementation == "sdpa"
    assert model.Qformer.config._attn_implementation == "sdpa"
    assert all(block.attn.fused_attn for block in model.visual_encoder.blocks)  # timm calls F.scaled_dot_product_attention
    eager = build(tiny_config(shapes_dir, "model.attn_implementation=eager"))
    assert eager.llama_model.config._attn_implementation == "eager"
