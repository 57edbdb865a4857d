"""Task adapters (ConLoRA): named LoRA adapters over one shared base model, one per task.

    model:
      adapters:
        grounding: {tasks: [refer, identify, grounding], r: 8, vision_blocks: 2}
        vqa:       {tasks: [vqa], r: 8}

Each adapter puts LoRA on the vision encoder's last `vision_blocks` blocks, on the projector
(`llama_proj`) and on the LLM's `llm_target_modules`. peft injects every adapter into the same layers
(`inject_adapter_in_model`, once per name), so a LoRA layer holds one (A, B) pair per adapter and adds
only the active one's B @ A to its base weight: switching is a flag flip, the base model is never
reloaded or modified.

Which adapter answers a request (`model.adapter`, demo.py `--adapter`):
  auto    the adapter whose `tasks` hold the request's task: the sample's `task`, or else a leading
          "[refer]"-style identifier in the question; no match -> the base model without adapters
  <name>  always that adapter
  none    the base model

Training: a data set's `adapter:` names the adapter its batches go through (one data set per
micro-step, so one adapter per step); only adapters named by some data set train, the rest of the
model trains only where `model.parts` says so.
"""
from __future__ import annotations

import re

import torch
from torch import nn

LORA_MARKER = ".lora_"  # in the state-dict key of every adapter weight
TASK_PREFIX = re.compile(r"^\s*\[(\w+)\]")


def canonical_key(key: str) -> str:
    """A weight's name as it would be without LoRA wrapping (`q_proj.base_layer.weight` -> `q_proj.weight`),
    so checkpoints load into a model with or without adapters."""
    return key.replace(".base_layer.", ".")


def is_adapter_weight(key: str) -> bool:
    return LORA_MARKER in key


def lora_layer_class() -> type:
    """peft's LoRA layer class, imported on first use: peft pulls in bitsandbytes, a second and a half
    of start-up that a model without adapters does not need."""
    from peft.tuners.lora import LoraLayer

    return LoraLayer


def target_modules(model: nn.Module, adapter_cfg) -> list[str]:
    """Full module names (from the MiniGPT root) that the adapter wraps."""
    LoraLayer = lora_layer_class()
    blocks = model.visual_encoder.blocks
    first_block = len(blocks) - adapter_cfg.vision_blocks
    names = [f"visual_encoder.blocks.{index}.{target}" for index in range(first_block, len(blocks))
             for target in adapter_cfg.vision_target_modules]
    if adapter_cfg.projector:  # its linear layers (one, or two in an MLP projector), not peft's own inside them
        names += [f"llama_proj.{name}".rstrip(".") for name, module in model.llama_proj.named_modules()
                  if isinstance(module, (nn.Linear, LoraLayer))
                  and not any(part == "base_layer" or part.startswith("lora_") for part in name.split("."))]
    wanted = set(adapter_cfg.llm_target_modules)
    names += [f"llama_model.{name}" for name, module in model.llama_model.named_modules()
              if name.rsplit(".", 1)[-1] in wanted and isinstance(module, (nn.Linear, LoraLayer))]
    return names


class TaskAdapters:
    """The adapters attached to one model: list, select, switch, train one, export one merged."""

    def __init__(self, model: nn.Module, configs: dict, selection: str = "auto"):
        self.model = model
        self.configs = dict(configs)
        self.selection = selection
        self.by_task = {task: name for name, cfg in self.configs.items() for task in cfg.tasks}
        self.trainable: set[str] = set()
        from peft import LoraConfig, inject_adapter_in_model

        for name, cfg in self.configs.items():
            targets = target_modules(model, cfg)
            for target in targets:
                attention = model.get_submodule(target.rsplit(".", 1)[0])
                if target.endswith(".qkv") and getattr(attention, "q_bias", None) is not None:
                    attention.qkv_bias_separate = True  # EVA adds q/v biases through F.linear, bypassing LoRA
            lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                              bias="none")
            inject_adapter_in_model(lora, model, adapter_name=name)
            vars(model).pop("peft_config", None)  # peft's bookkeeping; ours is self.configs
        for layer in self.layers():  # adapters train in float32, whatever the frozen base runs in
            for key in layer.adapter_layer_names:
                getattr(layer, key).float()
        self.active: str | None = None
        self._route(None)

    @property
    def names(self) -> list[str]:
        return list(self.configs)

    def layers(self) -> list[nn.Module]:
        """peft's LoRA layers in the model (each holds one A, B pair per adapter)."""
        return [module for module in self.model.modules() if isinstance(module, lora_layer_class())]

    def describe(self) -> str:
        return ", ".join(f"{name} (tasks: {', '.join(cfg.tasks) or '-'})" for name, cfg in self.configs.items())

    # ---- selection -------------------------------------------------------------------------------
    def choose(self, task: str | None = None, question: str = "") -> str | None:
        """The adapter for one request under the current `selection` (see the module docstring)."""
        if self.selection == "none":
            return None
        if self.selection != "auto":
            return self.selection
        if not task:
            match = TASK_PREFIX.match(question)
            task = match.group(1) if match else None
        return self.by_task.get(task)

    def use(self, name: str | None) -> None:
        """Route every LoRA layer through adapter `name`, or through none (the base model)."""
        if name is not None and name not in self.configs:
            raise KeyError(f"no adapter '{name}'; this model has: {', '.join(self.names) or 'none'}")
        if name != self.active:  # called every micro-step in training: only a change touches the layers
            self._route(name)

    def _route(self, name: str | None) -> None:
        requires_grad = {id(p): p.requires_grad for p in self.model.parameters()}
        for layer in self.layers():
            if name is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(name)
        for param in self.model.parameters():  # peft toggles requires_grad; training decides that here
            param.requires_grad_(requires_grad[id(param)])
        self.active = name

    # ---- training --------------------------------------------------------------------------------
    def named_weights(self, name: str) -> dict[str, nn.Parameter]:
        return {key: param for key, param in self.model.named_parameters()
                if is_adapter_weight(key) and f".{name}." in key}

    def set_trainable(self, names: set[str] | list[str]) -> None:
        """Adapters in `names` train; every other adapter is frozen."""
        unknown = set(names) - set(self.configs)
        if unknown:
            raise KeyError(f"no adapter {sorted(unknown)}; this model has: {', '.join(self.names)}")
        self.trainable = set(names)
        for name in self.configs:
            for param in self.named_weights(name).values():
                param.requires_grad_(name in self.trainable)

    # ---- export ----------------------------------------------------------------------------------
    @torch.no_grad()
    def merged_state_dict(self, name: str | None) -> dict[str, torch.Tensor]:
        """Every weight of the model with adapter `name` folded into its base weights (W + B @ A * scale),
        under plain names and without any adapter: loads into the same model built without adapters."""
        if name is not None and name not in self.configs:
            raise KeyError(f"no adapter '{name}'; this model has: {', '.join(self.names)}")
        deltas = {}
        if name is not None:
            for module_name, module in self.model.named_modules():
                if isinstance(module, lora_layer_class()) and name in module.lora_A:
                    deltas[f"{module_name}.weight"] = module.get_delta_weight(name)
        merged = {}
        for key, value in self.model.state_dict().items():
            if is_adapter_weight(key):
                continue
            key = canonical_key(key)
            if key in deltas:
                value = (value.float() + deltas[key].float()).to(value.dtype)
            merged[key] = value.detach().clone().contiguous()
        return merged
