"""Config checks, run by load_config before any model is built: each failure names the file (or
--options) that set the value and the dotted key, and says what would be right.

A key's allowed values are stated once, in the schema (common/schema.py: `choice`, `number`), and one
walk (allowed.py) applies them to every section. The modules here hold only what a single value cannot
show: keys that constrain each other, and the files, folders, registered names and optional packages a
config names; split by section (model.py, data.py, run.py).
"""
from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from minigpt.common.errors import ConfigError
from minigpt.config.validation.checker import Checker, source_of
from minigpt.config.validation.data import check_inference_transform, validate_dataset, validate_evaluation_section
from minigpt.config.validation.model import validate_model
from minigpt.config.validation.run import validate_run, validate_training_run

__all__ = ["source_of", "validate", "validate_evaluation"]


def validate(config: DictConfig, sources: list[tuple[str, DictConfig]], for_training: bool,
             for_planning: bool = False) -> None:
    """The model and run sections, and with `for_training` every data set and the output folder; raises
    ConfigError naming the file that set the offending key. `for_planning` (minigpt plan): the values
    only; no file, folder or optional package the config names need be there, and none is opened."""
    checker = Checker(sources, for_planning)
    validate_model(config.model, checker)
    validate_run(config.run, checker)
    if not for_training:
        check_inference_transform(config, checker)
        return
    if not config.datasets:
        raise ConfigError(sources[0][0], "datasets", "no dataset to train on")
    for name, dataset in config.datasets.items():
        validate_dataset(f"datasets.{name}", dataset, config, checker)
    validate_training_run(config, checker)


def validate_evaluation(config: DictConfig, sources: list[tuple[str, DictConfig]],
                        names: Sequence[str] | None = None) -> None:
    """The named `evaluation_datasets` sections (all by default), as eval.py will read them."""
    checker = Checker(sources)
    if not config.evaluation_datasets:
        checker.fail("evaluation_datasets", "no data set to evaluate")
    for name in names or []:
        if name not in config.evaluation_datasets:
            checker.fail("evaluation_datasets", f"no section '{name}' (known: {', '.join(config.evaluation_datasets)})")
    for name in names or list(config.evaluation_datasets):
        validate_evaluation_section(name, config, checker)
