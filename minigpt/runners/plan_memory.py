"""Memory per GPU for a planned model (plan_model.ModelStats) at a run's batch, length, precision and ZeRO
stage, and which levers would bring it under a GPU's memory.

    weights      each parameter in its dtype; an int8 / NF4 LLM at 1 / 0.5 bytes a weight (+ scales).
                 Under DeepSpeed with AMP the module is cast to 16 bits; ZeRO-3 divides it over the GPUs.
    gradients    trainable parameters only: in their dtype under DDP (twice with several GPUs: DDP's
                 all-reduce buckets are a second copy), 2 bytes under DeepSpeed AMP; ZeRO-2/3 divide them.
    optimizer    AdamW's two moments in the parameters' dtype (8 bytes a float32 weight) under DDP; under
                 DeepSpeed AMP a float32 master copy as well (12 bytes); ZeRO-1/2/3 divide them.
    activations  training: what the forward pass keeps for backward (activation_bytes); inference: the
                 KV cache at the full context plus one block's working tensors.

Not counted: the CUDA context, cuBLAS / cuDNN workspaces and the allocator's slack, kept aside as
CUDA_RESERVED when a plan is checked against a GPU's memory (`--gpu-memory`).
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from minigpt.models.scored_loss import rows_per_chunk
from minigpt.runners.plan_model import LayerStack, ModelStats

GIB = 2**30
CUDA_RESERVED = 1 * GIB
SCORED_LOGITS_COPIES = 3  # a chunk's logits, their softmax and their gradient, in float32


@dataclass(frozen=True)
class RunShape:
    """What memory depends on besides the model: one micro-batch, and how the run spreads over GPUs."""

    training: bool
    samples: int  # samples (images) per micro-batch; inference: beams
    seq_len: int  # tokens per row
    rows: int | None = None  # rows the LLM runs (None: one per sample; a packed batch holds several per row)
    gpus: int = 1
    zero_stage: int = 0  # DeepSpeed ZeRO stage; 0: DDP or a single process
    amp: bool = True
    llm_checkpointing: bool = False
    vision_checkpointing: bool = False
    logits_where_scored: bool = True
    eager_attention: bool = False
    logits_chunk_size: int | None = None

    @property
    def llm_rows(self) -> int:
        return self.samples if self.rows is None else self.rows


@dataclass
class Memory:
    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def memory_per_gpu(stats: ModelStats, shape: RunShape) -> Memory:
    """The four amounts (see the module docstring), in bytes, on each GPU."""
    zero, gpus = shape.zero_stage, shape.gpus
    weights = sum(part.weight_bytes for part in stats.parts.values())
    if zero and shape.amp:
        weights = 2 * stats.total_params
    if zero == 3:
        weights /= gpus
    if not shape.training:
        return Memory(weights, 0.0, 0.0, inference_activation_bytes(stats, shape))
    if zero:
        gradients = (2 * stats.trainable_params if shape.amp else stats.trainable_bytes) / (gpus if zero >= 2 else 1)
        optimizer = (12 * stats.trainable_params if shape.amp else 2 * stats.trainable_bytes) / gpus
    else:
        gradients = stats.trainable_bytes * (2 if gpus > 1 else 1)
        optimizer = 2 * stats.trainable_bytes
    return Memory(weights, gradients, optimizer, activation_bytes(stats, shape))


def block_bytes(stack: LayerStack, tokens: int, lora_targets: int = 0) -> float:
    """What one transformer block keeps for backward, for `tokens` tokens. Per token, in units of the hidden
    states' element size a (2 in bf16 / fp16), with width h and MLP width m:

        a * (8 h + 3 m)      its linear weights frozen (LoRA, a frozen LLM): the norms' float32 inputs, q, k, v
                             and the attention output (fused attention: no T x T scores), the gated MLP's
                             gate and up outputs and their product (a plain GELU MLP: m instead of 3 m)
        + a * (4 h + m)      its linear weights trained: their inputs too
        + a * 2 h            per LoRA-adapted layer (its dropped-out input and the dropout mask)

    Fitted to what transformers' Llama keeps in bf16 with sdpa, counted with saved-tensor hooks (within 3%;
    tests/test_plan.py measures it again); for a float32 stack the same counts at a = 4 run about 10% over."""
    h, m = stack.width, stack.mlp_width
    per_token = 8 * h + (3 if stack.gated_mlp else 1) * m
    if stack.linear_trained:
        per_token += 4 * h + m
    per_token += 2 * h * lora_targets
    return tokens * stack.element_bytes * per_token


def stack_bytes(stack: LayerStack, tokens: int, checkpointing: bool, lora_targets: int = 0) -> float:
    """A stack of blocks: without checkpointing every block's block_bytes; with it only each block's input
    (a * h per token) plus one block recomputed in backward; under no_grad one block's tensors at a time."""
    one_block = block_bytes(stack, tokens, lora_targets)
    if not stack.trains:
        return one_block
    if checkpointing:
        return stack.depth * tokens * stack.element_bytes * stack.width + one_block
    return stack.depth * one_block


def activation_bytes(stats: ModelStats, shape: RunShape) -> float:
    """Training activations: the LLM over rows x seq_len tokens, the vision encoder over each sample's
    image views, the LM head's logits, and T x T attention scores under eager attention. The Q-Former's
    and the projector's (32 to 256 tokens) are small beside these and left out."""
    tokens = shape.llm_rows * shape.seq_len
    llm = stack_bytes(stats.llm, tokens, shape.llm_checkpointing, stats.lora_targets)
    vision_tokens = shape.samples * stats.views_per_image * stats.vision_tokens
    vision = stack_bytes(stats.vision, vision_tokens, shape.vision_checkpointing)
    vocab = stats.llm_config.vocab_size
    if shape.logits_where_scored:
        logits = SCORED_LOGITS_COPIES * rows_per_chunk(vocab, shape.logits_chunk_size) * vocab * 4
    else:
        logits = tokens * vocab * (stats.llm.element_bytes + 4 + 4)  # the logits, in float32, their gradient
    scores = 0.0
    if shape.eager_attention:
        heads = stats.llm_config.num_attention_heads
        scores = stats.llm.depth * shape.llm_rows * heads * shape.seq_len ** 2 * 2 * stats.llm.element_bytes
    return llm + vision + logits + scores


def inference_activation_bytes(stats: ModelStats, shape: RunShape) -> float:
    """The KV cache over seq_len tokens for each beam, and one LLM block's and one ViT block's working
    tensors (the prompt's forward pass, one image)."""
    config = stats.llm_config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    kv_cache = 2 * stats.llm.depth * shape.seq_len * kv_heads * head_dim * stats.llm.element_bytes * shape.samples
    frozen_llm = dataclasses.replace(stats.llm, linear_trained=False, trains=False)
    frozen_vision = dataclasses.replace(stats.vision, linear_trained=False, trains=False)
    return (kv_cache + block_bytes(frozen_llm, shape.seq_len)
            + block_bytes(frozen_vision, stats.views_per_image * stats.vision_tokens))


# ---- levers ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lever:
    """One change to the run that lowers memory: what to set, and how it changes the plan."""

    name: str  # as the user would make it, in config keys
    changes: tuple = ()  # (RunShape field, value) pairs
    quantize_bits: int | None = None  # the LLM quantised (a different model: its own ModelStats)
    zero: bool = False


@dataclass
class LeverResult:
    levers: tuple[Lever, ...]
    samples: int  # the batch it fits with (the run's own when no batch lever is needed)
    memory: Memory
    fits: bool


def levers_for(shape: RunShape, stats: ModelStats, llm_mode: str, deepspeed_ok: bool) -> list[Lever]:
    """The levers that apply to this run, cheapest in behaviour change first; the batch is searched
    separately (fit_search). `deepspeed_ok`: the run may use DeepSpeed (not with a quantised LLM). Packing
    is offered where one row could hold the batch: rows planned longer than its samples' image tokens."""
    levers = []
    vision_trains = stats.vision.trains
    if shape.training and not shape.llm_checkpointing:
        keys = "model.use_grad_checkpoint_llm: true" + (", model.use_grad_checkpoint: true" if vision_trains else "")
        levers.append(Lever(f"gradient checkpointing ({keys})",
                            (("llm_checkpointing", True), ("vision_checkpointing", vision_trains))))
    if shape.training and shape.llm_rows > 1 and shape.samples * (1 + stats.image_tokens) < shape.seq_len:
        levers.append(Lever(f"packing (run.packing: true, run.packing_length: {shape.seq_len}): the batch's "
                            f"{shape.samples} samples in one row while they average <= "
                            f"{shape.seq_len // shape.samples} tokens", (("rows", 1),)))
    for bits in (8, 4):
        if stats.quantized_bits is None or bits < stats.quantized_bits:
            what = "QLoRA" if shape.training and llm_mode != "frozen" else "quantised LLM"
            keys = f"model.low_resource: true, low_resource_bits: {bits}" + (
                ", parts.llm.mode: lora" if llm_mode == "full" else "") + (", no DeepSpeed" if shape.zero_stage else "")
            levers.append(Lever(f"{what} ({keys})", (("zero_stage", 0),), quantize_bits=bits))
    if shape.training and deepspeed_ok and shape.gpus > 1:
        for stage in (2, 3):
            if stage > shape.zero_stage:
                levers.append(Lever(f"ZeRO-{stage} over {shape.gpus} GPUs (run.deepspeed_config: "
                                    f"train_configs/deepspeed/zero{stage}.json)", (("zero_stage", stage),), zero=True))
    return levers


def fit_search(levers: list[Lever], stats_for, shape: RunShape, budget: float,
               max_levers: int = 3) -> tuple[list[LeverResult], LeverResult | None]:
    """-> (each lever alone at the run's batch, plus the batch alone; the fewest levers, with the largest
    batch, that fit together, or None). `stats_for(bits)` gives the model's stats with its LLM quantised
    to `bits` (None: as configured)."""
    alone = [_evaluate((lever,), shape.samples, stats_for, shape, budget) for lever in levers]
    if shape.training:
        alone.append(_largest_batch((), stats_for, shape, budget))
    for size in range(1, max_levers + 1):
        combos = [combo for combo in itertools.combinations(levers, size) if _compatible(combo)]
        found = [result for result in (_largest_batch(combo, stats_for, shape, budget) for combo in combos)
                 if result.fits]
        if found:
            return alone, max(found, key=lambda result: result.samples)  # the first such: fewest behaviour changes
    return alone, None


def _compatible(combo: tuple[Lever, ...]) -> bool:
    """One ZeRO stage at most; a quantised LLM trains under DDP, not DeepSpeed (nor twice quantised)."""
    zero = sum(lever.zero for lever in combo)
    quantized = sum(lever.quantize_bits is not None for lever in combo)
    return zero <= 1 and quantized <= 1 and not (zero and quantized)


def _largest_batch(combo: tuple[Lever, ...], stats_for, shape: RunShape, budget: float) -> LeverResult:
    """The largest batch dividing the run's own (so that gradient accumulation keeps the samples per step
    exactly) that fits with `combo`; batch 1's result when none does."""
    result = None
    largest = shape.samples if shape.training else 1
    for samples in [batch for batch in range(largest, 0, -1) if largest % batch == 0]:
        result = _evaluate(combo, samples, stats_for, shape, budget)
        if result.fits:
            break
    return result


def _evaluate(combo: tuple[Lever, ...], samples: int, stats_for, shape: RunShape, budget: float) -> LeverResult:
    changes = {"samples": samples}
    if shape.rows is not None:
        changes["rows"] = min(shape.rows, samples)
    bits = None
    for lever in combo:
        changes.update(dict(lever.changes))
        bits = lever.quantize_bits or bits
    memory = memory_per_gpu(stats_for(bits), dataclasses.replace(shape, **changes))
    return LeverResult(combo, samples, memory, memory.total <= budget)
