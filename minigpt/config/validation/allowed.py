"""The one check of single values: every schema field made with `choice` or `number` (common/schema.py)
carries its allowed values, and this walk applies them wherever such a field sits in a config (nested
sections, dicts and lists of them, a builder's own options), so a new key needs no check of its own."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from minigpt.common.schema import ALLOWED


def allowed_value_problems(node: Any, key: str) -> Iterator[tuple[str, str]]:
    """(dotted key, problem) for each value under `node` (found at `key`) that its field does not allow.
    An unset optional key (None) is always allowed."""
    if isinstance(node, ListConfig):
        for index, item in enumerate(node):
            yield from allowed_value_problems(item, f"{key}.{index}")
        return
    if not isinstance(node, DictConfig):
        return
    limits = declared_limits(OmegaConf.get_type(node))
    for name, raw in node.items_ex(resolve=False):  # (raw: no interpolation is resolved to find sections)
        dotted_key = f"{key}.{name}"
        limit = limits.get(str(name))
        if limit is not None and node[name] is not None:
            problem = limit.problem(node[name])
            if problem:
                yield dotted_key, problem
        if isinstance(raw, (DictConfig, ListConfig)):  # (read through node[name]: None for an unset one)
            yield from allowed_value_problems(node[name], dotted_key)


def declared_limits(schema: Any) -> dict[str, Any]:
    """Field name -> its OneOf / Bounds, for a schema dataclass (nothing for a plain dict)."""
    if not dataclasses.is_dataclass(schema):
        return {}
    return {field.name: field.metadata[ALLOWED] for field in dataclasses.fields(schema) if ALLOWED in field.metadata}
