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


@pytest.mark.parametrize("qformer_mode", ["frozen", "full"])
def test_feature_cache_serves_the_same_features_and_misses_new_pixels(shapes_dir, qformer_mode):
    options = [f"model.parts.qformer.mode={qformer_mode}", *NO_DROPOUT]
    plain = build(tiny_config(shapes_dir, *options)).train()
    cached = build(tiny_config(shapes_dir, *options, "model.feature_cache_gb=0.01")).train()
    images = torch.randn(3, 3, 64, 64)
    for _ in range(2):  # the second pass is served from the cache
        assert torch.equal(cached.encode_image(images), plain.encode_image(images))
    cache = cached.feature_cache
    assert (cache.misses, cache.hits) == (3, 3)
    stored = next(iter(cache.entries.values()))
    assert stored.shape == ((8, 64) if qformer_mode == "frozen" else (1 + 16 * 16, 64))  # Q-Former output or ViT tokens
    cached.encode_image(images + 0.01)  # new pixels (an augmentation): computed, not served
    assert cache.misses == 6
    if qformer_mode == "full":  # the trained Q-Former runs after the cache, and gets its gradients
        cached(batch_for(cached, images[:1]))["loss"].backward()
        assert cached.Qformer.encoder.layer[0].attention.attention.query.weight.grad is not None


def test_feature_cache_stays_within_its_size_and_keys_on_the_weights(shapes_dir):
    from minigpt.models.feature_cache import FeatureCache

    model = build(tiny_config(shapes_dir, "model.parts.qformer.mode=frozen"))
    row_bytes = 8 * 64 * 4
    model.feature_cache = FeatureCache(max_bytes=5 * row_bytes)
    model.encode_image(torch.randn(8, 3, 64, 64))
    assert len(model.feature_cache.entries) == 5 and model.feature_cache.bytes == 5 * row_bytes  # oldest 3 evicted
    other = build(tiny_config(shapes_dir, "model.parts.qformer.mode=frozen"))
    with torch.no_grad():
        other.visual_encoder.blocks[0].attn.proj.weight.add_(0.01)
    other.feature_cache = FeatureCache(max_bytes=5 * row_bytes)
    image = torch.randn(1, 3, 64, 64)
    model.encode_image(image), other.encode_image(image)
    assert model.feature_cache.fingerprint != other.feature_cache.fingerprint
    assert model.feature_cache.key(image[0]) != other.feature_cache.key(image[0])


def test_feature_cache_needs_a_frozen_vision_encoder(shapes_dir):
    from minigpt.common.errors import ConfigError

    with pytest.raises(ConfigError, match="model.feature_cache_gb.*frozen vision encoder"):
        tiny_config(shapes_dir, "model.feature_cache_gb=1", "model.parts.vision_encoder.mode=full")
