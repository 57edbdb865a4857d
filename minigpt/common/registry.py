"""A thin name -> class registry, so that YAML configs can name models, builders and schedulers.

Each kind is a plain dict. `register_model("minigpt4")` is a decorator that stores the class;
`get("model", "minigpt4")` looks it up and lists the known names when it is missing. A class is
known once its module is imported: the config loader (minigpt.config.loader) imports every plugin
package.
"""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")

KINDS = ("model", "builder", "processor", "lr_scheduler", "eval_task")
_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


def register(kind: str, *names: str) -> Callable[[T], T]:
    """Decorator: store the class under each of `names` (aliases share one class)."""

    def decorator(cls: T) -> T:
        for name in names:
            known = _REGISTRY[kind].get(name)
            if known is not None and known is not cls:
                raise KeyError(f"{kind} '{name}' is already registered to {known.__name__}")
            _REGISTRY[kind][name] = cls
        return cls

    return decorator


def get(kind: str, name: str) -> type:
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY[kind])) or "none"
        raise KeyError(f"unknown {kind} '{name}'; known: {known}") from None


def names(kind: str) -> list[str]:
    return sorted(_REGISTRY[kind])


def names_of(kind: str, cls: type) -> list[str]:
    """Every name `cls` is registered under, in registration order."""
    return [name for name, known in _REGISTRY[kind].items() if known is cls]


def register_model(*names: str):
    return register("model", *names)


def register_builder(*names: str):
    return register("builder", *names)


def register_processor(*names: str):
    return register("processor", *names)


def register_lr_scheduler(*names: str):
    return register("lr_scheduler", *names)


def register_eval_task(*names: str):
    """An evaluation that scores a data set section as a whole (runners/eval_recipe.py) instead of asking
    its questions one by one; a builder whose eval_metric() is one of `names` is evaluated by it."""
    return register("eval_task", *names)

