"""The two sides of the training benchmark (bench/train_throughput.py), built to do the same work.

Ours is the recipe's step: `from_config` as train.py builds it (frozen ViT, Q-Former and LLM; the
projection trains), AdamW over the trainable groups. The baseline is what a user would write instead:
transformers' `Blip2ForConditionalGeneration` with a Llama language model of identical shapes
(bench/common.py). So that a gap between them is a lever of ours and not a difference in work, the
baseline is brought to ours' footing:
- the same weights: ours', through the export's mapping (tools/hf_export.blip2_state_dict);
- the same precision per part, cast once: on a GPU the frozen ViT in `vit_precision` (fp16), the LLM
  in bf16, ln_vision, the Q-Former and the trained projection in float32 (on the CPU all float32);
- frozen parts in eval mode (no dropout in the Q-Former), as ours keeps them;
- the same attention implementation in every part, set and then read back from each attention module
  (`attention_in`): the LLM's is `--attn`, the vision encoder's and Q-Former's SDPA (eager with
  `--attn eager`; neither timm's EVA nor the Q-Former runs flash-attention 2);
- its vision model, like ours' ViT, outside autocast where autocast is to the other half precision
  (fp16 weights under bf16: models/vision_encoder.in_own_precision);
- no KV cache in the training forward (`use_cache=False`, as ours passes).
tests/test_bench_train_parity.py checks in float32 that both then give the same loss and the same
gradients of the projection for the same batch.
"""
from __future__ import annotations

from pathlib import Path

import functools

import torch
from torch import nn

from bench.common import LLAMA2_7B, REPO, blip2_baseline
from minigpt.common import registry
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.models.vision_encoder import in_own_precision
from minigpt.ops.hf_export import blip2_state_dict

PRESETS = {  # config the model section comes from, its overrides, and per stage: (batch size, answer words)
    # tiny: the LLM's vocabulary has room past bench.common.small_tokenizer's 512 ids for the baseline's image token
    "tiny": ("train_configs/tiny_stage2.yaml", ["model.max_txt_len=200", "model.llama_config.vocab_size=520"],
             {"stage1": (32, 20), "stage2": (12, 100)}),
    "small": ("train_configs/tiny_stage2.yaml", [
        "model.max_txt_len=300", "model.image_size=224", "model.num_query_token=32",
        "datasets.sharegpt4v.vis_processor.train.image_size=224",
        "model.vit_config={patch_size: 14, embed_dim: 384, depth: 12, num_heads: 6, mlp_ratio: 4.0}",
        "model.qformer_config={hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 1024, "
        "cross_attention_frequency: 2}",
        "model.llama_config={model_type: llama, hidden_size: 512, intermediate_size: 1376, num_hidden_layers: 8, "
        "num_attention_heads: 8, num_key_value_heads: 8, max_position_embeddings: 1024, vocab_size: 32000}"],
        {"stage1": (32, 20), "stage2": (12, 100)}),
    "7b": ("train_configs/minigpt4_stage2_finetune.yaml", ["model.llama_model=null", "model.vit_weights=null",
                                                           "model.q_former_model=null"], {"stage1": (64, 20), "stage2": (12, 100)}),
}
FROZEN = ["model.parts.vision_encoder.mode=frozen", "model.parts.qformer.mode=frozen", "model.parts.llm.mode=frozen",
          "model.parts.projector.mode=full", "model.ckpt=null", "model.prompt_path=null"]
LEVERS = {  # our variants: (LM head only at labelled positions, packed rows)
    "ours_plain": (False, False), "ours_scored": (True, False), "ours": (True, True)}
RUNNERS = ["baseline", *LEVERS]
PARTS = ("vision", "qformer", "llm")


def model_config(preset: str, tokenizer: Path, attn: str = "sdpa", extra: tuple[str, ...] = ()):
    path, overrides, _ = PRESETS[preset]
    options = [*overrides, *FROZEN, f"model.tokenizer={tokenizer}", f"model.attn_implementation={attn}", *extra]
    if preset == "7b":
        options += [f"model.llama_config.{key}={value}" for key, value in LLAMA2_7B.items()]
    return load_config(REPO / path, options, for_training=False).model


def batches(image_size: int, stage: str, batch_size: int, words: int, count: int = 3) -> list[list[dict]]:
    """The samples of `count` batches: random images and text of the stage's length."""
    generator = torch.Generator().manual_seed(0)
    vocabulary = "red green blue yellow square circle triangle left right top bottom of the image a on".split()
    question = "Describe this image in detail." if stage == "stage2" else "Describe the image briefly."
    result = []
    for _ in range(count):
        samples = []
        spread = words * 9 // 10 if stage == "stage2" else words // 4
        for index in range(batch_size):
            length = words + int(torch.randint(-spread, spread + 1, (1,), generator=generator))
            answer = " ".join(vocabulary[int(i)] for i in torch.randint(len(vocabulary), (length,), generator=generator))
            samples.append({"id": str(index), "image": torch.randn(3, image_size, image_size, generator=generator),
                            "turns": [(USER, question), (ASSISTANT, answer)]})
        result.append(samples)
    return result


def part_attention(attn: str) -> dict[str, str]:
    """The attention implementation of each part, both sides alike: the LLM's is `attn`; the vision
    encoder and Q-Former take SDPA for flash-attention 2, which neither of them runs (on a GPU in half
    precision SDPA picks its flash kernel itself where no mask is given)."""
    others = "eager" if attn == "eager" else "sdpa"
    return {"vision": others, "qformer": others, "llm": attn}


def attention_in(module: nn.Module) -> set[str]:
    """What each attention module inside `module` runs, read from the modules themselves (not from a
    top-level config that a submodule might not share): timm's by its fused_attn flag, transformers' by
    its config's _attn_implementation."""
    found = set()
    for sub in module.modules():
        if hasattr(sub, "fused_attn"):  # timm: F.scaled_dot_product_attention, or matmul and softmax
            found.add("sdpa" if sub.fused_attn else "eager")
        elif type(sub).__name__.endswith("Attention") and hasattr(getattr(sub, "config", None), "_attn_implementation"):
            found.add(sub.config._attn_implementation)
    return found


def set_attention(parts: dict[str, nn.Module], wanted: dict[str, str]) -> dict[str, str]:
    """Set each part's attention implementation, then read every attention module back; -> the
    implementation per part (an AssertionError if a module runs another)."""
    for part, module in parts.items():
        if part == "vision" and not hasattr(module, "set_attn_implementation"):  # timm's EVA
            for sub in module.modules():
                if hasattr(sub, "fused_attn"):
                    sub.fused_attn = wanted[part] == "sdpa"
        else:
            module.set_attn_implementation(wanted[part])
    found = {part: attention_in(module) for part, module in parts.items()}
    assert found == {part: {wanted[part]} for part in parts}, f"attention {found}, wanted {wanted}"
    return {part: wanted[part] for part in parts}


def precision_of(module: nn.Module | nn.Parameter) -> torch.dtype:
    """The one floating dtype of a part's weights (an AssertionError if they are mixed)."""
    tensors = [module] if isinstance(module, nn.Parameter) else list(module.parameters())
    dtypes = {tensor.dtype for tensor in tensors if tensor.is_floating_point()}
    assert len(dtypes) == 1, f"mixed precisions {dtypes}"
    return dtypes.pop()


def blip2_pairs(baseline, ours) -> dict[str, tuple]:
    """The baseline's parts beside their counterparts in ours, by name."""
    vision = baseline.vision_model
    return {"vision": ([vision.embeddings, vision.encoder], ours.visual_encoder),
            "ln_vision": ([vision.post_layernorm], ours.ln_vision), "qformer": ([baseline.qformer], ours.Qformer),
            "query_tokens": ([baseline.query_tokens], ours.query_tokens),
            "projection": ([baseline.language_projection], ours.llama_proj),
            "llm": ([baseline.language_model], ours.llama_model)}


def place_like(baseline, ours) -> dict[str, str]:
    """Cast each of the baseline's parts once to the dtype of ours' counterpart (ours chose them: a frozen
    ViT in half precision and a frozen LLM in the compute dtype on a GPU, the trained projection in
    float32), rather than keep float32 weights that autocast casts again at every step; -> the dtype per part."""
    placed = {}
    for name, (theirs, mine) in blip2_pairs(baseline, ours).items():
        dtype = precision_of(mine)
        for item in theirs:
            if isinstance(item, nn.Parameter):
                item.data = item.data.to(dtype)
            else:
                item.to(dtype)
        assert {precision_of(item) for item in theirs} == {dtype}
        placed[name] = str(dtype).removeprefix("torch.")
    return placed


def run_in_own_precision(vision_model: nn.Module) -> None:
    """Make the baseline's vision model run as ours' ViT does (MiniGPT._encoder_features): outside
    autocast when that is to the other half precision than its weights'."""
    forward = vision_model.forward

    @functools.wraps(forward)
    def in_own(*args, **kwargs):
        weight = vision_model.embeddings.patch_embedding.weight
        with in_own_precision(weight.device.type, weight.dtype):
            return forward(*args, **kwargs)

    vision_model.forward = in_own


def precision_by_part(model) -> dict[str, str]:
    """Ours' dtype per part, in the names place_like reports."""
    parts = {"vision": model.visual_encoder, "ln_vision": model.ln_vision, "qformer": model.Qformer,
             "query_tokens": model.query_tokens, "projection": model.llama_proj, "llm": model.llama_model}
    return {name: str(precision_of(part)).removeprefix("torch.") for name, part in parts.items()}


class Ours:
    """Our model with the levers `levers` (see LEVERS). The three variants may share one model: a lever
    changes how a batch is computed (`logits_where_scored`, set before each step) and how it is collated
    (packing), not the weights."""

    def __init__(self, cfg, device: torch.device, compute_dtype: torch.dtype, levers: tuple[bool, bool], data: list,
                 shared: "Ours | None" = None):
        if shared is None:
            torch.manual_seed(0)
            model = registry.get("model", cfg.arch).from_config(cfg, device, compute_dtype).train()
            self.attention = set_attention({"vision": model.visual_encoder, "qformer": model.Qformer,
                                            "llm": model.llama_model}, part_attention(cfg.attn_implementation))
            self.optimizer = torch.optim.AdamW(model.param_groups(0.05, {}), lr=1e-5)
        else:
            model, self.attention, self.optimizer = shared.model, shared.attention, shared.optimizer
        self.model, self.scored = model, levers[0]
        self.precision = precision_by_part(model)
        self.data = [collator_for(model, packing=levers[1])(samples) for samples in data]

    def loss(self, batch: dict) -> torch.Tensor:
        self.model.logits_where_scored = self.scored
        return self.model(batch)["loss"]


class Baseline:
    """transformers' BLIP-2 holding ours' weights, placed, frozen and attending as ours (module docstring)."""

    def __init__(self, cfg, ours_model, device: torch.device, data: list):
        self.data = [collator_for(ours_model)(samples) for samples in data]
        model, self.image_token_id = blip2_baseline(ours_model, device)
        self.precision = place_like(model, ours_model)
        run_in_own_precision(model.vision_model)
        weights = {key: value for key, value in ours_model.state_dict().items()}
        model.load_state_dict(blip2_state_dict(weights, self.image_token_id), strict=True)  # every weight has its place
        assert not weights, f"weights of ours with no place in BLIP-2: {sorted(weights)[:3]}"
        self.attention = set_attention({"vision": model.vision_model, "qformer": model.qformer,
                                        "llm": model.language_model}, part_attention(cfg.attn_implementation))
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith("language_projection."))
        model.train()
        for frozen in (model.vision_model, model.qformer, model.language_model):
            frozen.eval()  # as ours keeps frozen parts: no dropout
        self.model, self.device = model, device
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def loss(self, batch: dict) -> torch.Tensor:
        input_ids = batch["input_ids"].masked_fill(batch["image_slots"], self.image_token_id).to(self.device)
        return self.model(pixel_values=batch["images"].to(self.device), input_ids=input_ids, use_cache=False,
                          attention_mask=batch["attention_mask"].to(self.device),
                          labels=batch["labels"].to(self.device)).loss


def build_runners(cfg, names: list[str], device: torch.device, data: list) -> dict:
    """The runners `names` (of RUNNERS) on the same batches; ours' variants share one model, and the
    baseline takes its weights."""
    compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ours = Ours(cfg, device, compute_dtype, LEVERS["ours_plain"], data)
    runners = {}
    for name in names:
        runners[name] = (Baseline(cfg, ours.model, device, data) if name == "baseline" else
                         Ours(cfg, device, compute_dtype, LEVERS[name], data, shared=ours))
    assert all(runner.attention == ours.attention and runner.precision == ours.precision for runner in runners.values())
    return runners
