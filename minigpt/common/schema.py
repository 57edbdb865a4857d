"""The config schema: every key a YAML file may set, with its type and default.

The layout is MiniGPT-4's (`model:`, `datasets:`, `run:`), so its train and eval configs load unchanged.
OmegaConf checks unknown keys and types against these dataclasses when files are merged into them. A key
that takes only some values says which where it is declared (`choice`, `number`): the config checks read
them from here (config/validation/allowed.py), so the values are stated once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

PART_NAMES = ("vision_encoder", "qformer", "projector", "llm")
PART_MODES = ("frozen", "full", "lora")
CHOICE_SCORINGS = ("total", "mean", "original")  # how a multiple-choice answer is ranked (inference/chat.py)

ALLOWED = "allowed"  # the metadata entry of a field made by choice() or number()


@dataclass(frozen=True)
class OneOf:
    """The values a key may take; `note` says what they mean where their names do not."""

    values: tuple[Any, ...]
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed (None: it is), as a config error puts it."""
        if value in self.values:
            return None
        names = [str(allowed) for allowed in self.values]
        listed = " or ".join(names) if len(names) == 2 else f"one of {', '.join(names)}"
        return f"{value!r} is not {listed}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Bounds:
    """The range of a numeric key: at least `at_least`, above `above`, below `below` (those that are set)."""

    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    note: str = ""

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range (None: it is in), as a config error puts it."""
        if (self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above) \
                and (self.below is None or value < self.below):
            return None
        if self.at_least is not None and self.below is not None:
            wanted = f"in [{self.at_least}, {self.below})"
        else:
            limits = ((">=", self.at_least), (">", self.above), ("<", self.below))
            wanted = " and ".join(f"{sign} {bound}" for sign, bound in limits if bound is not None)
        return f"must be {wanted}" + (f" ({self.note})" if self.note else "") + f", got {value}"


def choice(default: Any, *others: Any, note: str = "") -> Any:
    """A field that takes `default` or one of `others`; a config that sets another value is refused."""
    return field(default=default, metadata={ALLOWED: OneOf((default, *others), note)})


def number(default: Any, *, at_least: float | None = None, above: float | None = None, below: float | None = None,
           note: str = "") -> Any:
    """A numeric field within bounds (a None default: an optional key, which may stay unset)."""
    return field(default=default, metadata={ALLOWED: Bounds(at_least, above, below, note)})


@dataclass
class PartConfig:
    """How one part of the model trains: `frozen`, `full` or `lora`, with a learning-rate multiplier."""

    mode: str = choice(*PART_MODES)
    lr_mult: float = 1.0


@dataclass
class AdapterConfig:
    """One task adapter (ConLoRA): LoRA on the vision encoder's upper blocks, the projector and the LLM."""

    tasks: List[str] = field(default_factory=list)  # task identifiers that select it at inference
    r: int = number(8, above=0)
    alpha: int = 16
    dropout: float = 0.05
    vision_blocks: int = 2  # LoRA on this many of the encoder's last blocks (0: none)
    vision_target_modules: List[str] = field(default_factory=lambda: ["attn.qkv", "attn.proj"])
    projector: bool = True  # LoRA on llama_proj
    llm_target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # empty: none
    peft_folder: Optional[str] = None  # start from a folder that `minigpt export --format peft` wrote for it


@dataclass
class ExtraEncoderConfig:
    """A further vision encoder, from timm or a transformers folder, whose tokens are concatenated along
    channels with the vision tower's (SPHINX-style mixed visual embeddings; models/vision_mix.py)."""

    timm_model: str = ""  # a timm architecture, e.g. vit_large_patch14_dinov2 or convnext_xxlarge
    vision_model: str = ""  # or a transformers CLIP / SigLIP / DINOv2 folder or hub id (its weights, size, mean / std)
    weights: Optional[str] = None  # local .safetensors / .pth in timm's key layout; random weights when unset
    timm_config: Dict[str, Any] = field(default_factory=dict)  # timm.create_model arguments (tiny test shapes)
    image_size: Optional[int] = None  # its input side in pixels (default: the vision tower's)
    mean: Optional[List[float]] = None  # its input normalisation (default: timm's for the architecture)
    std: Optional[List[float]] = None
    mode: str = choice("frozen", "full")
    lr_mult: float = 1.0


@dataclass
class ModelConfig:
    arch: str = "minigpt4"
    model_type: Optional[str] = None

    # Vision encoder (models/vision_towers.py): eva_clip_g (timm EVA ViT-g), timm:<name> (a timm ViT), or a
    # transformers CLIP / SigLIP / DINOv2 folder or hub id. `vit_config` overrides an EVA or timm shape (tiny
    # test models; timm.create_model arguments).
    vit_model: str = "eva_clip_g"
    vit_weights: Optional[str] = None  # the EVA ViT-g file (eva_vit_g.pth) or a timm-layout file; random when unset
    vit_config: Dict[str, Any] = field(default_factory=dict)
    image_size: Optional[int] = None  # pixels per side; unset: the tower's own (EVA 224, a folder's processor's)
    # the raw output of this block (-1 the last, -2 the one before, as LLaVA takes); unset: the tower's own output
    vit_layer: Optional[int] = number(None, below=0, note="-1: the last block, -2: the one before")
    vit_cls: str = choice("keep", "drop", note="the tokens before the patches: CLS and any registers")
    drop_path_rate: float = 0.0
    use_grad_checkpoint: bool = False
    vit_precision: str = choice("fp16", "fp32", "bf16")
    # > 0: keep a frozen encoder's image features in memory, up to this size
    feature_cache_gb: float = number(0.0, at_least=0, note="a size in GiB; > 0 turns the cache on")
    freeze_vit: Optional[bool] = None  # legacy switch for parts.vision_encoder.mode

    # Projector: a BLIP-2 Q-Former + linear layer, or (has_qformer: false) 4 concatenated tokens + linear.
    has_qformer: bool = True
    freeze_qformer: Optional[bool] = None  # legacy switch for parts.qformer.mode
    num_query_token: int = 32
    q_former_model: Optional[str] = None
    qformer_config: Dict[str, Any] = field(default_factory=dict)
    proj_type: str = choice("linear", "mlp")  # the layer into the LLM: linear, or mlp (linear, GELU, linear)

    # SPHINX-style mixing (models/vision_mix.py, models/sub_images.py): more encoders concatenated along
    # channels, and a high-resolution input seen as a global view plus sub_image_grid^2 sub-images.
    extra_encoders: List[ExtraEncoderConfig] = field(default_factory=list)
    sub_image_grid: int = number(1, at_least=1, note="1: no sub-images")  # > 1: sub_image_grid x image_size pixels

    # LLM: a Hugging Face folder (`llama_model`), or random weights from an inline config.
    llama_model: Optional[str] = None
    llama_config: Dict[str, Any] = field(default_factory=dict)
    tokenizer: Optional[str] = None  # defaults to the llama_model folder
    trust_remote_code: bool = False  # run Python code shipped in the llama_model folder (only one you trust)
    low_resource: bool = False  # quantise the LLM with bitsandbytes (inference; training: QLoRA, models/training_model.py)
    low_resource_bits: int = choice(8, 4, note="8: LLM.int8, 4: NF4")
    device_8bit: int = 0
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    llm_adapter: Optional[str] = None  # a peft adapter folder to start the LLM's LoRA from (models/peft_folders.py)
    use_grad_checkpoint_llm: bool = False
    # The LM head and loss only at labelled positions, logits_chunk_size rows at a time (models/scored_loss.py);
    # false: over every position, as transformers computes it (the same loss, for comparison).
    logits_where_scored: bool = True
    # None: rows for about 32 MiB of float32 logits (64 to 1024)
    logits_chunk_size: Optional[int] = number(None, at_least=1, note="rows of logits at a time")
    # the LLM's attention: sdpa (PyTorch's fused kernels), flash_attention_2, eager
    attn_implementation: str = choice("sdpa", "flash_attention_2", "eager")

    # Prompting and the token budget, as MiniGPT-4 counts it: max_txt_len bounds what follows the first
    # user turn (answers, later turns), max_context_len the prompt (BOS excluded, image tokens included).
    prompt: str = ""
    prompt_path: Optional[str] = None
    # A format string around each user turn ("[INST] {} [/INST]"), "" for none (stage 1), or "auto": the
    # LLM's own chat template from its tokenizer folder, whose end-of-turn token then replaces end_sym.
    prompt_template: str = ""
    system_prompt: str = ""  # with prompt_template "auto": a system message before the first user turn
    instruction_suffix: str = ""  # appended to each user turn of an image sample (MiniGPT-v2's data: " ")
    chat_prompt: str = "auto"  # generation prompts: auto | training | vicuna_v0 | llama2 | minigptv2 (chat_styles.py)
    max_txt_len: int = 160
    max_context_len: int = 3800
    end_sym: str = "\n"
    chat_template: Optional[bool] = None  # MiniGPT-v2's switch, reported as ignored (IGNORED_KEYS)
    task_identifiers: bool = False  # write each sample's task as "[vqa] ..." (MiniGPT-v2)

    ckpt: Optional[str] = None
    parts: Dict[str, PartConfig] = field(default_factory=dict)

    # Task adapters: name -> AdapterConfig. A data set trains the one its `adapter:` names; at inference
    # `adapter` picks one: `auto` (by the request's task identifier), a name, or `none` (base model).
    adapters: Dict[str, AdapterConfig] = field(default_factory=dict)
    adapter: str = "auto"


@dataclass
class BuildInfo:
    storage: Optional[str] = None  # webdataset shard pattern, or a folder
    ann_path: Optional[str] = None  # annotation JSON
    url: Optional[Any] = None  # a URL (or LAVIS's list) of the annotation file: fetched, and ann_path set to it
    image_path: Optional[str] = None  # image folder the annotations refer into
    dataset: Optional[str] = None  # RefCOCO family: refcoco | refcoco+ | refcocog (folder under ann_path)
    splitBy: Optional[str] = None  # RefCOCO family: unc | umd | google (the refs(<splitBy>).p file)


@dataclass
class DatasetConfig:
    """Options every dataset accepts; builders may extend this with their own fields."""

    builder: Optional[str] = None  # the registered builder; defaults to the section's name
    data_type: str = "images"
    type: str = "default"
    build_info: BuildInfo = field(default_factory=BuildInfo)
    batch_size: Optional[int] = number(None, above=0)
    sample_ratio: float = number(1.0, above=0)
    vis_processor: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    text_processor: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    adapter: Optional[str] = None  # the task adapter (model.adapters) its batches train


@dataclass
class EvalOptions:
    """What eval.py adds to a data set's section under `evaluation_datasets:` (the rest configures its
    builder as under `datasets:`). MiniGPT-v2's benchmark config names its paths eval_file_path and
    img_path; they stand for build_info.ann_path and build_info.image_path."""

    metric: Optional[str] = None  # vqa_accuracy | exact_match | refer_accuracy | caption (default: the builder's)
    instruction: Optional[str] = None  # the question's wording, "{}" marking the question or expression
    max_new_tokens: int = number(20, at_least=1)
    num_beams: int = number(1, at_least=1)
    repetition_penalty: float = 1.0
    eval_file_path: Optional[str] = None
    img_path: Optional[str] = None
    choice_scoring: str = choice(*CHOICE_SCORINGS)  # multiple choice (minigpt/inference/chat.py)


@dataclass
class RunConfig:
    task: str = "image_text_pretrain"
    # MiniGPT-4's train configs name one of these; both mean the one training recipe (runners/train_recipe.py)
    runner: str = choice("runner_base", "runner_iter")

    # Optimiser and schedule.
    lr_sched: str = "linear_warmup_cosine_lr"
    init_lr: float = number(1e-4, at_least=0)
    min_lr: float = number(1e-5, at_least=0)
    warmup_lr: float = number(1e-6, at_least=0)
    warmup_steps: int = number(0, at_least=0)
    lr_decay_rate: Optional[float] = None
    weight_decay: float = number(0.05, at_least=0)
    beta2: float = number(0.999, at_least=0, below=1)
    max_grad_norm: Optional[float] = number(None, above=0)  # (a negative norm would flip every gradient)

    # Length of training: max_epoch x iters_per_epoch optimiser steps.
    max_epoch: int = number(1, above=0)
    iters_per_epoch: Optional[int] = number(None, above=0)
    accum_grad_iters: int = number(1, above=0)
    packing: bool = False  # several samples per row, each attending to itself (conversation/collator.py)
    # tokens per packed row (at least the batch's longest sample; null: that)
    packing_length: Optional[int] = number(None, above=0)
    batch_size_train: Optional[int] = number(None, above=0)  # default per-dataset batch size
    batch_size_eval: Optional[int] = number(None, above=0)
    num_workers: int = number(0, at_least=0)
    group_by_length: bool = False  # batches of similar text length (less padding); map-style data sets

    seed: int = 42
    output_dir: str = "output"
    amp: bool = False
    amp_dtype: str = choice("bfloat16", "float16")
    deepspeed_config: Optional[Any] = None  # a DeepSpeed JSON / YAML path or an inline mapping: ZeRO instead of DDP
    resume_ckpt_path: Optional[str] = None  # a checkpoint folder, or "latest" in output_dir
    ckpt_freq: Optional[int] = number(None, above=0)  # also checkpoint every N steps (epoch ends always save)
    # keep only the newest N checkpoints (None: all); the newest always stays
    keep_last: Optional[int] = number(None, above=0)
    strict: bool = False  # raise on a bad sample instead of skipping and counting it

    device: str = "cuda"

    log_freq: int = number(50, above=0)
    wandb_log: bool = False
    wandb_project: str = "minigpt"
    # also write TensorBoard events to <output_dir>/tensorboard; unset: when tensorboard is installed
    tensorboard_log: Optional[bool] = None
    job_name: Optional[str] = None
    save_path: Optional[str] = None  # the eval output folder (MiniGPT-v2's name; output_dir when unset)

    # MiniGPT-4's configs carry these; they load, and the loader reports them as ignored (IGNORED_KEYS).
    task: Optional[str] = None
    evaluate: Optional[bool] = None
    train_splits: Optional[List[str]] = None
    valid_splits: Optional[List[str]] = None
    test_splits: Optional[List[str]] = None
    use_dist_eval_sampler: Optional[bool] = None
    world_size: Optional[int] = None
    dist_url: Optional[str] = None
    distributed: Optional[bool] = None


# Keys MiniGPT-4's own configs set that change nothing here, and why; a config that sets one is told so.
IGNORED_KEYS = {
    "run.task": "one training task (image_text_pretrain) serves every stage",
    "run.evaluate": "evaluation is its own command (minigpt eval)",
    "run.train_splits": "a data set section trains on its own files",
    "run.valid_splits": "no validation during training: minigpt eval scores checkpoints",
    "run.test_splits": "no testing during training: minigpt eval scores checkpoints",
    "run.use_dist_eval_sampler": "minigpt eval always splits questions across ranks",
    "run.world_size": "the launcher (torchrun) decides the ranks",
    "run.dist_url": "ranks meet through torchrun's environment",
    "run.distributed": "ranks come from torchrun; without it, one process",
    "model.chat_template": "prompt_template wraps every user turn whenever it is set",
}
