"""MiniGPT: vision encoder -> projector -> LLM, composed from unchanged library parts.

    images [B, 3, S, S] -> visual_encoder + ln_vision -> [B, 1 + P, C]            (timm EVA ViT)
      Q-Former projector:  Qformer(query_tokens, cross-attending) -> [B, Q, H] -> llama_proj -> [B, Q, D]
      concat projector:    drop CLS, 4 neighbours concatenated -> [B, P/4, 4C] -> llama_proj -> [B, P/4, D]
    text ids with image slots -> embeddings, image slots replaced by image_embeds -> LLM -> loss / text

MiniGPT-4 (Q-Former), its Llama-2 variant and MiniGPT-v2 (concat projector) are configurations of this
one class. Attribute names follow the released checkpoints (`llama_proj`, `llama_model`, ...), so their
keys load as they are, but for LAVIS's Q-Former names and old peft LoRA names (models/key_names.py).
"""
from __future__ import annotations

import contextlib
import sys

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel, StoppingCriteriaList

from minigpt.common.config import resolve_path
from minigpt.common.schema import PART_NAMES
from minigpt.conversation.template import PromptTemplate
from minigpt.datasets.collator import ConversationCollator
from minigpt.models.adapters import TaskAdapters, canonical_key, is_adapter_weight
from minigpt.models.feature_cache import FeatureCache
from minigpt.models.llm import build_llm
from minigpt.models.pretrained import load_blip2_qformer, load_eva_vit
from minigpt.models.vision_encoder import PRESETS, build_vision_encoder, num_patches

CONCAT_TOKENS = 4  # neighbouring visual tokens concatenated by the no-Q-Former projector


def image_token_count(cfg) -> int:
    """Visual tokens per image for a `model:` config, without building the model (for budget checks)."""
    if cfg.has_qformer:
        return cfg.num_query_token
    patch_size = {**PRESETS[cfg.vit_model], **dict(cfg.vit_config)}["patch_size"]
    return (cfg.image_size // patch_size) ** 2 // CONCAT_TOKENS


class MiniGPT(nn.Module):
    default_model_type = "pretrain"
    default_configs: dict[str, str] = {}

    def __init__(self, visual_encoder: nn.Module, ln_vision: nn.Module, llama_model: nn.Module, tokenizer,
                 template: PromptTemplate, qformer: nn.Module | None = None, num_query_token: int = 32,
                 max_txt_len: int = 160, max_context_len: int = 3800, vision_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.visual_encoder = visual_encoder
        self.ln_vision = ln_vision
        self.Qformer = qformer
        llm_width = llama_model.config.hidden_size
        if qformer is not None:
            self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, qformer.config.hidden_size))
            nn.init.normal_(self.query_tokens, std=0.02)
            self.llama_proj = nn.Linear(qformer.config.hidden_size, llm_width)
            self.num_image_tokens = num_query_token
        else:
            self.query_tokens = None
            self.llama_proj = nn.Linear(visual_encoder.num_features * CONCAT_TOKENS, llm_width)
            self.num_image_tokens = num_patches(visual_encoder) // CONCAT_TOKENS
        self.llama_model = llama_model
        self.tokenizer = tokenizer
        self.template = template
        self.max_txt_len = max_txt_len
        self.max_context_len = max_context_len
        self.vision_dtype = vision_dtype
        self.part_modes = {part: "full" for part in PART_NAMES}
        self.pretrained_parts: set[str] = set()  # parts whose weights come from files outside our checkpoints
        self.adapters: TaskAdapters | None = None  # task adapters (ConLoRA), see attach_adapters
        self.feature_cache: FeatureCache | None = None  # frozen image features by content (model.feature_cache_gb)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg, device: str | torch.device = "cpu", compute_dtype: torch.dtype = torch.float32) -> "MiniGPT":
        """Build every part from the `model:` config section; frozen parts run in `compute_dtype` on GPU."""
        on_gpu = torch.device(device).type == "cuda"
        half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.vit_precision, torch.float32)
        vision_frozen = cfg.parts.vision_encoder.mode == "frozen"
        vision_dtype = half if (on_gpu and vision_frozen) else torch.float32
        visual_encoder, ln_vision = build_vision_encoder(cfg.vit_model, cfg.image_size, cfg.drop_path_rate,
                                                         cfg.use_grad_checkpoint, dict(cfg.vit_config))
        qformer = None
        if cfg.has_qformer:
            qformer_config = Blip2QFormerConfig(encoder_hidden_size=visual_encoder.num_features, **dict(cfg.qformer_config))
            qformer = Blip2QFormerModel(qformer_config)
        llm_trains_fully = cfg.parts.llm.mode == "full"
        llm_dtype = compute_dtype if (on_gpu and not llm_trains_fully) else torch.float32
        quantize_bits = cfg.low_resource_bits if (cfg.low_resource and cfg.llama_model) else None
        device_map = {"": cfg.device_8bit if on_gpu else "cpu"} if quantize_bits else None
        llama_model, tokenizer = build_llm(cfg.llama_model, dict(cfg.llama_config), cfg.tokenizer,
                                           dtype=llm_dtype, quantize_bits=quantize_bits, device_map=device_map,
                                           trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
        if cfg.use_grad_checkpoint_llm:
            # Non-reentrant: gradients reach LoRA weights even though the LLM's own inputs need none.
            if hasattr(llama_model, "activation_checkpointing_enable"):  # transformers >= 5 names it so
                llama_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                llama_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = cls(visual_encoder, ln_vision, llama_model, tokenizer, PromptTemplate.from_model_config(cfg),
                    qformer=qformer, num_query_token=cfg.num_query_token, max_txt_len=cfg.max_txt_len,
                    max_context_len=cfg.max_context_len, vision_dtype=vision_dtype)
        if cfg.llama_model:
            model.pretrained_parts.add("llm")
        if cfg.vit_weights:
            print(load_eva_vit(model.visual_encoder, resolve_path(cfg.vit_weights)), file=sys.stderr)
            model.pretrained_parts.add("vision_encoder")
        if cfg.has_qformer and cfg.q_former_model:
            print(load_blip2_qformer(model, resolve_path(cfg.q_former_model)), file=sys.stderr)
            model.pretrained_parts.add("qformer")
        model.set_part_modes({part: cfg.parts[part].mode for part in PART_NAMES}, cfg)
        llm = model.llama_model
        model.llama_model = None  # a quantised LLM already sits where bitsandbytes placed it
        model.to(device)
        model.llama_model = llm if quantize_bits else llm.to(device)
        model.visual_encoder.to(vision_dtype)
        if cfg.adapters:
            model.attach_adapters(cfg.adapters, cfg.adapter)
        if cfg.feature_cache_gb > 0:
            model.feature_cache = FeatureCache(int(cfg.feature_cache_gb * 2**30))
        return model

    def attach_adapters(self, configs: dict, selection: str = "auto") -> TaskAdapters:
        """Add task adapters (frozen until `adapters.set_trainable`); the base keeps its part modes."""
        self.adapters = TaskAdapters(self, configs, selection)
        self.set_part_modes({part: mode for part, mode in self.part_modes.items() if mode != "lora"})
        self.adapters.set_trainable(set())
        return self.adapters

    def part_modules(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        return {
            "vision_encoder": [self.visual_encoder, self.ln_vision],
            "qformer": [m for m in (self.Qformer, self.query_tokens) if m is not None],
            "projector": [self.llama_proj],
            "llm": [self.llama_model],
        }

    def set_part_modes(self, modes: dict[str, str], cfg=None) -> None:
        """`frozen`: no gradients and eval mode for good; `full`: trained; `lora`: peft adapters on the LLM.
        Task adapter weights are left alone (see TaskAdapters.set_trainable)."""
        adapter_ids = {id(p) for key, p in self.named_parameters() if is_adapter_weight(key)}
        for part, mode in modes.items():
            if mode == "lora":
                if part != "llm":
                    raise ValueError(f"model.parts.{part}.mode: lora is supported on the LLM only")
                from peft import LoraConfig, get_peft_model

                lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                  target_modules=list(cfg.lora_target_modules), bias="none", task_type="CAUSAL_LM")
                self.llama_model = get_peft_model(self.llama_model, lora)
                continue
            for item in self.part_modules()[part]:
                params = [item] if isinstance(item, nn.Parameter) else item.parameters()
                for param in params:
                    if id(param) not in adapter_ids:
                        param.requires_grad_(mode == "full")
        self.part_modes.update(modes)
        self.train(self.training)

    def train(self, mode: bool = True) -> "MiniGPT":
        """Frozen parts stay in eval mode (no dropout, fixed norms) whatever the caller asks."""
        super().train(mode)
        for part, part_mode in self.part_modes.items():
            if part_mode == "frozen":
                for item in self.part_modules()[part]:
                    if isinstance(item, nn.Module):
                        item.eval()
        if self.adapters:  # an adapter inside a frozen part still trains with its dropout on
            for layer in self.adapters.layers():
                layer.lora_dropout.train(mode)
        return self

    def param_groups(self, weight_decay: float, lr_mults: dict[str, float]) -> list[dict]:
        """AdamW groups per part: decay on matrices, none on biases, norms and embeddings-like vectors."""
        groups = []
        for part, items in self.part_modules().items():
            params = [p for item in items for p in ([item] if isinstance(item, nn.Parameter) else item.parameters())]
            trainable = [p for p in params if p.requires_grad]
            decay = [p for p in trainable if p.ndim >= 2]
            no_decay = [p for p in trainable if p.ndim < 2]
            for group_params, group_decay in ((decay, weight_decay), (no_decay, 0.0)):
                if group_params:
                    groups.append({"params": group_params, "weight_decay": group_decay,
                                   "lr_mult": lr_mults.get(part, 1.0), "part": part})
        return groups

    def checkpoint_weights(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold: trained parameters, every task adapter, plus every part not loaded
        from pretrained files (a frozen but randomly initialised encoder is part of the model too).
        Keys are canonical (no `.base_layer`), so they load with or without adapters attached."""
        keep = {id(p) for part, items in self.part_modules().items() if part not in self.pretrained_parts
                for item in items for p in ([item] if isinstance(item, nn.Parameter) else item.parameters())}
        return {canonical_key(name): param.detach().contiguous() for name, param in self.named_parameters()
                if param.requires_grad or id(param) in keep or is_adapter_weight(name)}

    def collator(self, strict: bool = False) -> ConversationCollator:
        return ConversationCollator(self.tokenizer, self.template, self.num_image_tokens, self.max_txt_len, strict)

    @property
    def device(self) -> torch.device:
        return self.llama_proj.weight.device

    # ---- forward --------------------------------------------------------------------------------
    def _is_frozen(self, part: str) -> bool:
        """Frozen, and no trainable task adapter inside it: its output depends on its input alone."""
        if self.part_modes[part] != "frozen":
            return False
        return not (self.adapters and self.adapters.trainable and any(
            p.requires_grad for item in self.part_modules()[part] if isinstance(item, nn.Module) for p in item.parameters()))

    def _grad_context(self, part: str):
        """No autograd graph through a frozen part."""
        return torch.no_grad() if self._is_frozen(part) else contextlib.nullcontext()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> image_embeds [B, num_image_tokens, D_llm]."""
        cache = self.feature_cache if self._is_frozen("vision_encoder") else None
        through_qformer = cache is not None and self.Qformer is not None and self._is_frozen("qformer")
        if cache is not None:  # the frozen stack's output, by image content
            frozen = [*self.part_modules()["vision_encoder"], *(self.part_modules()["qformer"] if through_qformer else [])]
            features = cache(images, lambda pixels: self._frozen_features(pixels, through_qformer), frozen)
        else:
            features = self._frozen_features(images, through_qformer=False)
        if self.Qformer is not None and not through_qformer:
            features = self._query_tokens_out(features)
        elif self.Qformer is None:
            batch, num, width = features[:, 1:].shape  # [B, P, C] without CLS
            features = features[:, 1:].reshape(batch, num // CONCAT_TOKENS, CONCAT_TOKENS * width)  # [B, P/4, 4C]
        return self.llama_proj(features)

    def _frozen_features(self, images: torch.Tensor, through_qformer: bool) -> torch.Tensor:
        """The vision encoder's tokens [B, 1 + P, C] (or, through the Q-Former, its output [B, Q, H])."""
        with self._grad_context("vision_encoder"):
            image_features = self.ln_vision(self.visual_encoder.forward_features(images.to(self.vision_dtype)))
        image_features = image_features.to(self.llama_proj.weight.dtype)  # [B, 1 + P, C]
        return self._query_tokens_out(image_features) if through_qformer else image_features

    def _query_tokens_out(self, image_features: torch.Tensor) -> torch.Tensor:
        """[B, 1 + P, C] -> the Q-Former's query outputs [B, Q, H]."""
        with self._grad_context("qformer"):
            query_embeds = self.query_tokens.expand(image_features.shape[0], -1, -1)
            return self.Qformer(query_embeds=query_embeds, encoder_hidden_states=image_features).last_hidden_state

    def embed_inputs(self, input_ids: torch.Tensor, image_slots: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings [B, T, D] with the image slots filled by image_embeds, in batch order."""
        inputs_embeds = self.llama_model.get_input_embeddings()(input_ids)
        if images is not None:
            image_embeds = self.encode_image(images).to(inputs_embeds.dtype)  # [N, M, D]
            inputs_embeds = inputs_embeds.masked_scatter(image_slots.unsqueeze(-1), image_embeds)
        elif self.training:
            # A text-only batch still runs the vision path, on a blank image whose embeddings are masked
            # out (x 0), so that under DDP every rank gives gradients for the same parameters and no
            # rank waits forever in the gradient all-reduce.
            size = self.visual_encoder.patch_embed.img_size
            blank = torch.zeros(1, 3, *size, device=input_ids.device)
            inputs_embeds = inputs_embeds + 0.0 * self.encode_image(blank).sum().to(inputs_embeds.dtype)
        return inputs_embeds

    def forward(self, batch: dict) -> dict:
        device = self.device
        images = batch["images"].to(device) if batch["images"] is not None else None
        input_ids = batch["input_ids"].to(device)
        inputs_embeds = self.embed_inputs(input_ids, batch["image_slots"].to(device), images)
        labels = batch["labels"].to(device)
        output = self.llama_model(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"].to(device),
                                  labels=labels)
        return {"loss": output.loss, "logits": output.logits}

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 300, num_beams: int = 1, temperature: float = 1.0,
                 top_p: float = 0.9, repetition_penalty: float = 1.05, do_sample: bool = False,
                 streamer=None, stopping_criteria: list | None = None) -> list[str]:
        """Answers for a left-padded generation batch (see ConversationCollator.generation_batch).
        `streamer` and `stopping_criteria` go to transformers' generate (see chat.stream_answer)."""
        device = self.device
        images = batch["images"].to(device) if batch["images"] is not None else None
        inputs_embeds = self.embed_inputs(batch["input_ids"].to(device), batch["image_slots"].to(device), images)
        if inputs_embeds.shape[1] + max_new_tokens > self.max_context_len:
            raise ValueError(f"prompt of {inputs_embeds.shape[1]} tokens + {max_new_tokens} new tokens exceeds "
                             f"max_context_len={self.max_context_len}; reset the conversation")
        end_sym = self.template.end_sym
        stop = {} if end_sym == self.tokenizer.eos_token else {"stop_strings": [end_sym], "tokenizer": self.tokenizer}
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        output_ids = self.llama_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample,
            repetition_penalty=repetition_penalty, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, streamer=streamer,
            stopping_criteria=StoppingCriteriaList(stopping_criteria or []), **sampling, **stop)
        texts = self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)
        return [text.split(end_sym)[0].strip() for text in texts]
