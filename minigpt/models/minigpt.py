"""MiniGPT: vision encoder -> projector -> LLM, composed from unchanged library parts.

    images [B, 3, S, S] -> visual_encoder + ln_vision -> [B, p + P, C]   (vision_towers.py; EVA: p = 1, the CLS)
      (+ extra_encoders, concatenated along channels: C = C_tower + sum C_k; see vision_mix.py)
      Q-Former projector:  Qformer(query_tokens, cross-attending) -> [B, Q, H] -> llama_proj -> [B, Q, D]
      concat projector:    drop the p, 4 neighbours concatenated -> [B, P/4, 4C] -> llama_proj -> [B, P/4, D]
      llama_proj: one linear layer, or (proj_type: mlp) linear, GELU, linear
    text ids with image slots -> embeddings, image slots replaced by image_embeds -> LLM -> loss / text

With sub_image_grid g > 1 an image is g*S pixels, seen as a global view plus g*g sub-images, each
encoded as above and laid out with separators (sub_images.py).

MiniGPT-4 (Q-Former), its Llama-2 variant, MiniGPT-v2 (concat projector) and a SPHINX-like mix are
configurations of this one class. Attribute names follow the released checkpoints (`llama_proj`,
`llama_model`, ...), so their keys load as they are, but for LAVIS's Q-Former names and old peft LoRA
names (models/key_names.py).
"""
from __future__ import annotations

import contextlib
import sys

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel, LogitsProcessorList, StoppingCriteriaList

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path
from minigpt.common.schema import PART_NAMES
from minigpt.conversation.generated import GeneratedAnswer
from minigpt.conversation.template import PromptTemplate
from minigpt.models.adapters import TaskAdapters, canonical_key, is_adapter_weight
from minigpt.models.feature_cache import FeatureCache
from minigpt.models.generation import RowEnds, counted_answers
from minigpt.models.image_tokens import CONCAT_TOKENS, image_token_count, input_image_size
from minigpt.models.llm import build_llm, check_lora_targets, dequantized_weights
from minigpt.models.peft_folders import load_llm_adapter, load_task_adapter
from minigpt.models.penalties import PresenceFrequencyPenalty
from minigpt.models.pretrained import load_blip2_qformer
from minigpt.models.projector import build_projector
from minigpt.models.scored_loss import RowScores, mean_token_loss, row_scores
from minigpt.models.sub_images import join_views, split_views
from minigpt.models.vision_encoder import in_own_precision
from minigpt.models.vision_mix import mixed_width
from minigpt.models.vision_towers import build_vision_side, load_tower_weights


def vit_dtype(cfg) -> torch.dtype:
    """The precision of a frozen vision encoder on a GPU (`vit_precision`)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.vit_precision, torch.float32)


class MiniGPT(nn.Module):
    default_model_type = "pretrain"
    default_configs: dict[str, str] = {}

    def __init__(self, visual_encoder: nn.Module, ln_vision: nn.Module, llama_model: nn.Module, tokenizer,
                 template: PromptTemplate, num_image_tokens: int, input_size: int, qformer: nn.Module | None = None,
                 num_query_token: int = 32, max_context_len: int = 3800, vision_dtype: torch.dtype = torch.float32,
                 extra_encoders: list[nn.Module] | None = None, proj_type: str = "linear", sub_image_grid: int = 1,
                 logits_where_scored: bool = True, logits_chunk_size: int | None = None):
        super().__init__()
        self.visual_encoder = visual_encoder
        self.ln_vision = ln_vision
        self.extra_encoders = nn.ModuleList(extra_encoders or [])
        self.Qformer = qformer
        llm_width = llama_model.config.hidden_size
        if qformer is not None:
            self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, qformer.config.hidden_size))
            nn.init.normal_(self.query_tokens, std=0.02)
            self.llama_proj = build_projector(qformer.config.hidden_size, llm_width, proj_type)
        else:
            self.query_tokens = None
            self.llama_proj = build_projector(mixed_width(visual_encoder, self.extra_encoders) * CONCAT_TOKENS,
                                              llm_width, proj_type)
        self.sub_image_grid = sub_image_grid
        self.view_separator = None  # with sub-images: the learned embedding after each view's tokens
        if sub_image_grid > 1:
            self.view_separator = nn.Parameter(torch.zeros(llm_width))
            nn.init.normal_(self.view_separator, std=0.02)
        self.num_image_tokens = num_image_tokens  # image-slot tokens per image (image_token_count)
        self.input_size = input_size  # pixels per side of an input image (input_image_size)
        self.llama_model = llama_model
        self.tokenizer = tokenizer
        self.template = template
        # Prompt + answer tokens a chat may hold: never past the positions the LLM was trained on
        # (Vicuna v0: 2048; the default 3800 is Llama-2's MiniGPT-v2 limit).
        self.max_context_len = min(max_context_len, llama_model.config.max_position_embeddings)
        self.vision_dtype = vision_dtype
        self.logits_where_scored, self.logits_chunk_size = logits_where_scored, logits_chunk_size
        self.part_modes = {part: "full" for part in self.part_modules()}
        self.pretrained_parts: set[str] = set()  # parts whose weights come from files outside our checkpoints
        self.adapters: TaskAdapters | None = None  # task adapters (ConLoRA), see attach_adapters
        self.feature_cache: FeatureCache | None = None  # frozen image features by content (model.feature_cache_gb)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg, device: str | torch.device = "cpu", compute_dtype: torch.dtype = torch.float32,
                    llm_on_cpu: bool = False) -> "MiniGPT":
        """Build every part from the `model:` config section, load the pretrained files it names, set each
        part's mode, then place the parts; frozen parts run in `compute_dtype` on a GPU.
        `llm_on_cpu`: the LLM stays on the CPU in `compute_dtype`, for inference.split_llm to place."""
        on_gpu = torch.device(device).type == "cuda"
        model = cls._build_parts(cfg, on_gpu, compute_dtype, llm_on_cpu)
        model._load_pretrained_parts(cfg)
        modes = {part: cfg.parts[part].mode for part in PART_NAMES}
        modes.update({f"extra_encoder_{index}": extra.mode for index, extra in enumerate(cfg.extra_encoders)})
        model.set_part_modes(modes, cfg)
        if cfg.llm_adapter:
            load_llm_adapter(model.llama_model, cfg.llm_adapter, cfg)
        model._place(cfg, device, keep_llm=llm_on_cpu or cfg.low_resource and bool(cfg.llama_model))
        if cfg.adapters:
            model.attach_adapters(cfg.adapters, cfg.adapter)
            for name, adapter_cfg in cfg.adapters.items():
                if adapter_cfg.peft_folder:
                    load_task_adapter(model, name, adapter_cfg.peft_folder)
        if cfg.feature_cache_gb > 0:
            model.feature_cache = FeatureCache(int(cfg.feature_cache_gb * 2**30))
        return model

    @classmethod
    def _build_parts(cls, cfg, on_gpu: bool, compute_dtype: torch.dtype, llm_on_cpu: bool) -> "MiniGPT":
        """The modules, with random weights (or, for an LLM folder, its own), composed into the model."""
        visual_encoder, ln_vision, extra_encoders = build_vision_side(cfg)
        qformer = None
        if cfg.has_qformer:
            qformer_config = Blip2QFormerConfig(encoder_hidden_size=mixed_width(visual_encoder, extra_encoders),
                                                **dict(cfg.qformer_config))
            qformer = Blip2QFormerModel(qformer_config)
        llm_trains_fully = cfg.parts.llm.mode == "full"
        llm_dtype = compute_dtype if (on_gpu and (llm_on_cpu or not llm_trains_fully)) else torch.float32
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
        vision_frozen = cfg.parts.vision_encoder.mode == "frozen"
        return cls(visual_encoder, ln_vision, llama_model, tokenizer, PromptTemplate.from_model_config(cfg, tokenizer),
                   num_image_tokens=image_token_count(cfg), input_size=input_image_size(cfg), qformer=qformer,
                   num_query_token=cfg.num_query_token, max_context_len=cfg.max_context_len,
                   vision_dtype=vit_dtype(cfg) if (on_gpu and vision_frozen) else torch.float32,
                   extra_encoders=extra_encoders, proj_type=cfg.proj_type, sub_image_grid=cfg.sub_image_grid,
                   logits_where_scored=cfg.logits_where_scored, logits_chunk_size=cfg.logits_chunk_size)

    def _load_pretrained_parts(self, cfg) -> None:
        """The vision tower's and Q-Former's files; parts loaded from files stay out of our checkpoints."""
        if cfg.llama_model:
            self.pretrained_parts.add("llm")
        if load_tower_weights(self.visual_encoder, cfg):
            self.pretrained_parts.add("vision_encoder")
        for index, extra in enumerate(cfg.extra_encoders):
            if extra.weights or extra.vision_model:  # loaded by build_extra_encoder
                self.pretrained_parts.add(f"extra_encoder_{index}")
        if cfg.has_qformer and cfg.q_former_model:
            print(load_blip2_qformer(self, resolve_path(cfg.q_former_model)), file=sys.stderr)
            self.pretrained_parts.add("qformer")

    def _place(self, cfg, device: str | torch.device, keep_llm: bool) -> None:
        """Every part to `device`, the frozen vision side in its half precision on a GPU. `keep_llm`: the LLM
        stays where it is (a quantised one sits where bitsandbytes placed it; a split one is placed later)."""
        on_gpu = torch.device(device).type == "cuda"
        llm = self.llama_model
        self.llama_model = None
        self.to(device)
        self.llama_model = llm if keep_llm else llm.to(device)
        self.visual_encoder.to(self.vision_dtype)
        for extra, extra_cfg in zip(self.extra_encoders, cfg.extra_encoders):
            extra.model.to(vit_dtype(cfg) if (on_gpu and extra_cfg.mode == "frozen") else torch.float32)

    def attach_adapters(self, configs: dict, selection: str = "auto") -> TaskAdapters:
        """Add task adapters (frozen until `adapters.set_trainable`); the base keeps its part modes."""
        self.adapters = TaskAdapters(self, configs, selection)
        self.set_part_modes({part: mode for part, mode in self.part_modes.items() if mode != "lora"})
        self.adapters.set_trainable(set())
        return self.adapters

    def part_modules(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        """Parts by name; each trains as its mode says. Extra encoders are parts `extra_encoder_<index>`."""
        return {
            "vision_encoder": [self.visual_encoder, self.ln_vision],
            **{f"extra_encoder_{index}": [extra] for index, extra in enumerate(self.extra_encoders)},
            "qformer": [m for m in (self.Qformer, self.query_tokens) if m is not None],
            "projector": [m for m in (self.llama_proj, self.view_separator) if m is not None],
            "llm": [self.llama_model],
        }

    def vision_parts(self) -> list[str]:
        """The parts that see pixels: the EVA ViT and each extra encoder."""
        return ["vision_encoder", *(f"extra_encoder_{index}" for index in range(len(self.extra_encoders)))]

    def set_part_modes(self, modes: dict[str, str], cfg=None) -> None:
        """`frozen`: no gradients and eval mode for good; `full`: trained; `lora`: peft adapters on the LLM.
        Task adapter weights are left alone (see TaskAdapters.set_trainable)."""
        adapter_ids = {id(p) for key, p in self.named_parameters() if is_adapter_weight(key)}
        for part, mode in modes.items():
            if mode == "lora":
                if part != "llm":
                    raise ValueError(f"model.parts.{part}.mode: lora is supported on the LLM only")
                from peft import LoraConfig, get_peft_model

                check_lora_targets(self.llama_model, list(cfg.lora_target_modules))
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
        Keys are canonical (no `.base_layer`), so they load with or without adapters attached; quantised
        weights are saved dequantised (QLoRA on an LLM built from config)."""
        keep = {id(p) for part, items in self.part_modules().items() if part not in self.pretrained_parts
                for item in items for p in ([item] if isinstance(item, nn.Parameter) else item.parameters())}
        dequantized = dequantized_weights(self)
        return {canonical_key(name): dequantized.get(name, param).detach().contiguous()
                for name, param in self.named_parameters()
                if param.requires_grad or id(param) in keep or is_adapter_weight(name)}

    @property
    def device(self) -> torch.device:
        return next(self.llama_proj.parameters()).device

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
        """[B, 3, g*S, g*S] -> image_embeds [B, num_image_tokens, D_llm] (g = sub_image_grid, 1 by default)."""
        if self.sub_image_grid == 1:
            return self._encode_views(images)
        view_embeds = self._encode_views(split_views(images, self.sub_image_grid))  # [B * (1 + g*g), M, D]
        return join_views(view_embeds, self.sub_image_grid, self.view_separator)  # [B, (1 + g*g) * (M + 1), D]

    def _encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, M, D_llm]: encoders, projector."""
        vision_frozen = all(self._is_frozen(part) for part in self.vision_parts())
        cache = self.feature_cache if vision_frozen else None
        through_qformer = cache is not None and self.Qformer is not None and self._is_frozen("qformer")
        if cache is not None:  # the frozen stack's output, by image content
            parts = [*self.vision_parts(), *(["qformer"] if through_qformer else [])]
            frozen = [item for part in parts for item in self.part_modules()[part]]
            features = cache(views, lambda pixels: self._encoder_features(pixels, through_qformer), frozen)
        else:
            features = self._encoder_features(views, through_qformer=False)
        if self.Qformer is not None and not through_qformer:
            features = self._query_tokens_out(features)
        elif self.Qformer is None:
            batch, num, width = features[:, self.visual_encoder.prefix_tokens:].shape  # [B, P, C]: the patches
            features = features[:, -num:].reshape(batch, num // CONCAT_TOKENS, CONCAT_TOKENS * width)  # [B, P/4, 4C]
        return self.llama_proj(features)

    def _encoder_features(self, images: torch.Tensor, through_qformer: bool) -> torch.Tensor:
        """The vision encoders' tokens [B, p + P, C] (or, through the Q-Former, its output [B, Q, H]);
        what the feature cache keeps when every part here is frozen."""
        with self._grad_context("vision_encoder"), in_own_precision(images.device.type, self.vision_dtype):
            image_features = self.ln_vision(self.visual_encoder(images.to(self.vision_dtype)))
        dtype = next(self.llama_proj.parameters()).dtype
        image_features = image_features.to(dtype)  # [B, p + P, C_tower]
        if len(self.extra_encoders):
            mixed, tower = [image_features], self.visual_encoder
            for index, extra in enumerate(self.extra_encoders):
                with self._grad_context(f"extra_encoder_{index}"):
                    mixed.append(extra(images, tower.grid, tower.prefix_tokens).to(dtype))  # [B, p + P, C_k]
            image_features = torch.cat(mixed, dim=-1)  # [B, p + P, C_tower + sum C_k]
        return self._query_tokens_out(image_features) if through_qformer else image_features

    def _query_tokens_out(self, image_features: torch.Tensor) -> torch.Tensor:
        """[B, p + P, C] -> the Q-Former's query outputs [B, Q, H]."""
        with self._grad_context("qformer"):
            query_embeds = self.query_tokens.expand(image_features.shape[0], -1, -1)
            return self.Qformer(query_embeds=query_embeds, encoder_hidden_states=image_features).last_hidden_state

    def embed_inputs(self, input_ids: torch.Tensor, image_slots: torch.Tensor, images: torch.Tensor | None,
                     image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings [B, T, D] with the image slots filled by image_embeds, in batch order.
        `image_index` [R]: the image of each row that has one, when rows share images (each is encoded once)."""
        inputs_embeds = self.llama_model.get_input_embeddings()(input_ids)
        if images is not None:
            image_embeds = self.encode_image(images).to(inputs_embeds.dtype)  # [N, M, D]
            if image_index is not None:
                image_embeds = image_embeds[image_index.to(image_embeds.device)]  # [R, M, D]
            # (a split LLM may embed on another GPU than the vision side's)
            image_embeds, image_slots = image_embeds.to(inputs_embeds.device), image_slots.to(inputs_embeds.device)
            inputs_embeds = inputs_embeds.masked_scatter(image_slots.unsqueeze(-1), image_embeds)
        elif self.training:
            # A text-only batch still runs the vision path, on a blank image whose embeddings are masked
            # out (x 0), so that under DDP every rank gives gradients for the same parameters and no
            # rank waits forever in the gradient all-reduce.
            blank = torch.zeros(1, 3, self.input_size, self.input_size, device=input_ids.device)
            inputs_embeds = inputs_embeds + 0.0 * self.encode_image(blank).sum().to(inputs_embeds.dtype)
        return inputs_embeds

    def batch_embeds(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """A collated batch -> (inputs_embeds [B, T, D] with its images in their slots, the LLM's masks: the
        attention_mask, or for a packed batch its position_ids, from which transformers masks each sample)."""
        device = self.device
        images = batch["images"].to(device) if batch["images"] is not None else None
        inputs_embeds = self.embed_inputs(batch["input_ids"].to(device), batch["image_slots"].to(device), images,
                                          batch.get("image_index"))
        if batch.get("position_ids") is not None:
            return inputs_embeds, {"attention_mask": None, "position_ids": batch["position_ids"].to(device)}
        return inputs_embeds, {"attention_mask": batch["attention_mask"].to(device)}

    def forward(self, batch: dict, with_loss: bool = True) -> dict:
        """With `with_loss`: {"loss": the mean loss of the labelled tokens}, the LM head run only where a label
        scores it (models/scored_loss.py) unless `logits_where_scored` is off. Without: {"logits": [B, T, V]}."""
        inputs_embeds, masks = self.batch_embeds(batch)
        if with_loss and self.logits_where_scored:
            return {"loss": mean_token_loss(self.llama_model, inputs_embeds, batch["labels"], self.logits_chunk_size,
                                            **masks), "logits": None}
        output = self.llama_model(inputs_embeds=inputs_embeds, use_cache=False, **masks,
                                  labels=batch["labels"].to(self.device) if with_loss else None)
        return {"loss": output.loss, "logits": output.logits}

    @torch.no_grad()
    def answer_scores(self, batch: dict) -> RowScores:
        """Each row's answer scored: its summed loss, its token count, and whether greedy decoding writes it."""
        inputs_embeds, masks = self.batch_embeds(batch)
        return row_scores(self.llama_model, inputs_embeds, batch["labels"], self.logits_chunk_size, **masks)

    def generate(self, batch: dict, **options) -> list[str]:
        """The answers' texts for a left-padded generation batch; `options` are generate_counted's."""
        return [answer.text for answer in self.generate_counted(batch, **options)]

    @torch.no_grad()
    def generate_counted(self, batch: dict, max_new_tokens: int = 300, num_beams: int = 1, temperature: float = 1.0,
                         top_p: float = 0.9, repetition_penalty: float = 1.05, do_sample: bool = False,
                         streamer=None, stopping_criteria: list | None = None, stop: tuple[str, ...] = (),
                         presence_penalty: float = 0.0, frequency_penalty: float = 0.0, top_k: int = 50,
                         min_p: float = 0.0) -> list[GeneratedAnswer]:
        """Answers for a left-padded generation batch (ConversationCollator.generation_batch) with the ids generated
        for each and why it ended (models/generation.py: an API's usage and finish reason). An answer stops where
        the context is full, or before the first `stop` string; `streamer` and `stopping_criteria` go to generate."""
        inputs_embeds, masks = self.batch_embeds(batch)
        room = self.max_context_len - inputs_embeds.shape[1]
        if room < 1:
            raise InputError(f"prompt of {inputs_embeds.shape[1]} tokens leaves no room for an answer in "
                             f"max_context_len={self.max_context_len}; reset the conversation")
        end_sym = self.template.end_sym
        markers = [*([] if end_sym == self.tokenizer.eos_token else [end_sym]), *stop]
        ends = RowEnds(self.tokenizer, markers, stopping_criteria)
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p or None} if do_sample else {}
        penalized = presence_penalty or frequency_penalty
        penalties = [PresenceFrequencyPenalty(presence_penalty, frequency_penalty)] if penalized else []
        output_ids = self.llama_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=masks["attention_mask"],
            max_new_tokens=min(max_new_tokens, room), num_beams=num_beams, do_sample=do_sample,
            repetition_penalty=repetition_penalty, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, streamer=streamer, stopping_criteria=StoppingCriteriaList([ends]),
            logits_processor=LogitsProcessorList(penalties), **sampling)
        return counted_answers(output_ids, ends, self.tokenizer, [end_sym, *stop], num_beams)
