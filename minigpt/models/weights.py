"""Load a checkpoint into a model: released key names mapped to ours, shapes checked, and a report of
what was left out on either side."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from minigpt.common.checkpoint import read_weights
from minigpt.common.errors import CheckpointError
from minigpt.models.adapters import canonical_key
from minigpt.models.key_names import released_key

QUANTIZED_PARAMS = ("Params4bit", "Int8Params")  # bitsandbytes' weight classes


def load_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load what a checkpoint holds into `model`; a shape mismatch is an error naming the key.

    Returns the report: `unexpected` keys the model lacks, and `missing_trainable` parameters that
    train in this run but were not in the checkpoint (fine when a stage starts training a new part).
    """
    weights = read_weights(path)
    own = model.state_dict()
    model_key = {canonical_key(key): key for key in own}  # checkpoints use canonical names
    # A quantised layer (QLoRA) keeps the weights it was quantised from: a checkpoint's are the same, dequantised.
    quantized = {name for name, param in model.named_parameters() if type(param).__name__ in QUANTIZED_PARAMS}
    renamed, unused = {}, []
    for key, value in weights.items():
        ours = released_key(key)  # LAVIS Q-Former and peft 0.2.0 LoRA names -> ours
        if ours is None:
            unused.append(key)
            continue
        target = model_key.get(canonical_key(ours), ours)
        if target in quantized:
            continue
        if target in own and own[target].shape != value.shape:
            raise CheckpointError(f"{path}: {key}: checkpoint shape {tuple(value.shape)} does not match the model's "
                             f"{tuple(own[target].shape)} (was it trained with another LLM size or config?)")
        renamed[target] = value
    if weights and not renamed.keys() & own.keys():
        raise CheckpointError(f"{path}: none of its {len(weights)} weights is a parameter of this model (first: "
                         f"{next(iter(weights))}); is it a checkpoint of another architecture, or saved with a prefix?")
    result = model.load_state_dict(renamed, strict=False)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    return {"unexpected": list(result.unexpected_keys) + unused, "missing_trainable": sorted(trainable - set(renamed))}
