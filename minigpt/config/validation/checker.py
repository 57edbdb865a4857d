"""How a check reports: a ConfigError that names the file (or --options) whose value is in force, the
dotted key, and what would be right."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf

from minigpt.common.errors import ConfigError
from minigpt.common.paths import resolve_path
from minigpt.config.validation.allowed import allowed_value_problems


def source_of(sources: list[tuple[str, DictConfig]], dotted_key: str) -> str:
    """The last file that set `dotted_key` (the one whose value is in force)."""
    for source, config in reversed(sources):
        if OmegaConf.select(config, dotted_key, default=None) is not None:
            return source
    return "defaults"


@dataclass(frozen=True)
class Checker:
    """What every check needs: where each key came from, and whether the files the config names must be
    there (`for_planning`, minigpt plan: the values only; no file, folder or optional package need exist)."""

    sources: list[tuple[str, DictConfig]]
    for_planning: bool = False

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(source_of(self.sources, key), key, problem)

    def check_path(self, key: str, value: str | None) -> None:
        if value and not self.for_planning and not resolve_path(value).exists():
            self.fail(key, f"path '{value}' does not exist")

    def check_allowed_values(self, section: DictConfig, key: str) -> None:
        """The values the schema limits (common/schema.py: choice, number), anywhere in `section`."""
        for dotted_key, problem in allowed_value_problems(section, key):
            self.fail(dotted_key, problem)
