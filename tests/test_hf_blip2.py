"""A transformers BLIP-2 folder as the source of the EVA ViT and the Q-Former (models/hf_blip2.py)."""
import json

import pytest
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

from conftest import REPO
from minigpt.common.errors import CheckpointError
from minigpt.config.loader import load_config
from minigpt.inference.loading import load_for_inference


def tiny_blip2(folder):
    """BLIP-2 with the tiny MiniGPT-4's vision and Q-Former shapes (and a tiny OPT we do not use)."""
    vision = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                  patch_size=4, qkv_bias=True)
    qformer = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   cross_attention_frequency=1, encoder_hidden_size=64)
    text = dict(model_type="opt", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=64, vocab_size=100,
                word_embed_proj_dim=32, max_position_embeddings=64)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=8)
    torch.manual_seed(3)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for layer in model.vision_model.encoder.layers:  # as in every released BLIP-2: no key bias
            if layer.self_attn.qkv.bias is not None:
                layer.self_attn.qkv.bias[64:128] = 0
    model.save_pretrained(folder)
    return model


def test_vision_encoder_and_qformer_load_from_a_transformers_blip2_folder(shapes_dir, tmp_path):
    theirs = tiny_blip2(tmp_path / "blip2")
    folder = tmp_path / "blip2"
    options = [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null", f"model.vit_weights={folder}",
               f"model.q_former_model={folder}"]
    ours = load_for_inference(load_config(REPO / "eval_configs/tiny_eval.yaml", options, for_training=False),
                              torch.device("cpu"))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        image_embeds = theirs.vision_model(pixel_values=pixels).last_hidden_state  # post_layernorm applied
        features = ours.ln_vision(ours.visual_encoder.forward_features(pixels))
        assert (features - image_embeds).abs().max() < 1e-4
        query = theirs.qformer(query_embeds=theirs.query_tokens.expand(2, -1, -1), encoder_hidden_states=image_embeds)
        assert (ours._query_tokens_out(features) - query.last_hidden_state).abs().max() < 1e-4

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(
        json.dumps({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]}))
    with pytest.raises(CheckpointError, match="model_type 'llava' .*a BLIP-2 folder .* is expected"):
        load_for_inference(load_config(REPO / "eval_configs/tiny_eval.yaml",
                                       options[:2] + [f"model.vit_weights={tmp_path / 'other'}"], for_training=False),
                           torch.device("cpu"))
