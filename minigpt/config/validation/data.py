"""Checks of data set sections (`datasets:` for training, `evaluation_datasets:` for eval.py) that a
single key's allowed values cannot express: the files they read, their processors' options, image sizes
that must match the model's, adapters the model must have, registered builders and metrics."""
from __future__ import annotations

import inspect

from omegaconf import DictConfig

from minigpt.common import registry
from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path, shard_paths
from minigpt.config.validation.checker import Checker
from minigpt.datasets.builders.base import AnnotationBuilder
from minigpt.datasets.builders.caption_builders import CaptionShardBuilder
from minigpt.datasets.builders.messages_builder import dataset_info_entry
from minigpt.evaluation.metrics import METRICS
from minigpt.models.image_tokens import input_image_size
from minigpt.models.vision_towers import tower_shape
from minigpt.paragraph.facts import STAGES


def validate_dataset(key: str, dataset: DictConfig, config: DictConfig, checker: Checker) -> None:
    """A `datasets:` section, as training reads it."""
    checker.check_allowed_values(dataset, key)
    model = config.model
    if dataset.batch_size is None and config.run.batch_size_train is None:
        checker.fail(f"{key}.batch_size", "no batch size (set it here or run.batch_size_train)")
    if dataset.build_info.storage and not checker.for_planning:
        _check_storage(key, dataset, checker)
    if dataset.data_type == "images" and not dataset.vis_processor:
        checker.fail(f"{key}.vis_processor", "missing: set vis_processor.train (name, image_size)")
    if dataset.adapter is not None and dataset.adapter not in model.adapters:
        checker.fail(f"{key}.adapter", f"no adapter '{dataset.adapter}' in model.adapters "
                                       f"(known: {', '.join(model.adapters) or 'none'})")
    if model.adapters and dataset.adapter is None and all(p.mode == "frozen" for p in model.parts.values()):
        checker.fail(f"{key}.adapter", "every part is frozen, so this data set must name the adapter it trains")
    checker.check_path(f"{key}.build_info.ann_path", dataset.build_info.ann_path)
    checker.check_path(f"{key}.build_info.image_path", dataset.build_info.image_path)
    if "dataset_info" in dataset and not checker.for_planning:
        _check_messages_source(dataset, key, checker)
    for kind in ("vis_processor", "text_processor"):
        for split, processor in dataset[kind].items():
            _check_processor(processor, f"{key}.{kind}.{split}", checker)
            if kind == "vis_processor":
                _check_input_size(processor, f"{key}.{kind}.{split}", model, checker)


def _check_storage(key: str, dataset: DictConfig, checker: Checker) -> None:
    """build_info.storage: a file or folder, or webdataset shards (a pattern naming each of them)."""
    storage = dataset.build_info.storage
    paths = shard_paths(storage) if ".tar" in storage else [storage]
    missing = [p for p in paths if not resolve_path(p).exists()]
    if missing or not paths:
        checker.fail(f"{key}.build_info.storage", f"path '{missing[0] if missing else storage}' does not exist")
    if issubclass(registry.get("builder", dataset.builder), CaptionShardBuilder) and resolve_path(storage).is_dir():
        folder = storage.rstrip("/")
        checker.fail(f"{key}.build_info.storage", f"'{storage}' is a folder; name its webdataset shards, e.g. "
                                                  f"'{folder}/{{00000..00099}}.tar' or '{folder}/*.tar'")


def _check_messages_source(dataset: DictConfig, key: str, checker: Checker) -> None:
    """A messages data set reads build_info.ann_path, or an entry of a LLaMA-Factory dataset_info.json."""
    if dataset.dataset_info is None:
        if dataset.build_info.ann_path is None:
            checker.fail(f"{key}.build_info.ann_path", "missing: name the data file (or dataset_info and dataset)")
        return
    if dataset.dataset is None:
        checker.fail(f"{key}.dataset", f"missing: name the entry of {dataset.dataset_info} to use")
    checker.check_path(f"{key}.dataset_info", dataset.dataset_info)
    try:
        dataset_info_entry(dataset.dataset_info, dataset.dataset)
    except InputError as error:
        checker.fail(f"{key}.dataset_info", str(error))


def check_inference_transform(config: DictConfig, checker: Checker) -> None:
    """The image transform chat and serve take (the first data set's) must give the model's input size."""
    for name, dataset in config.datasets.items():
        split = "eval" if "eval" in dataset.vis_processor else "train"
        if split in dataset.vis_processor:
            key = f"datasets.{name}.vis_processor.{split}"
            _check_input_size(dataset.vis_processor[split], key, config.model, checker)
            return


def validate_evaluation_section(name: str, config: DictConfig, checker: Checker) -> None:
    """An `evaluation_datasets:` section, as eval.py reads it: its files are needed even for a plan."""
    section = config.evaluation_datasets[name]
    key = f"evaluation_datasets.{name}"
    if not issubclass(registry.get("builder", section.builder), AnnotationBuilder):
        checker.fail(f"{key}.builder", f"'{section.builder}' reads webdataset shards, which eval.py does not evaluate")
    checker.check_allowed_values(section, key)
    if section.metric is not None and section.metric not in METRICS:
        checker.fail(f"{key}.metric", f"'{section.metric}' is not one of {', '.join(METRICS)}")
    if "variants" in section:  # a paragraph_gallery section: each variant is made of known stages
        for variant, stages in section.variants.items():
            if not stages or any(stage not in STAGES for stage in stages):
                checker.fail(f"{key}.variants.{variant}",
                             f"stages must be some of {', '.join(STAGES)}, got {list(stages)}")
    for path_key, alias in (("ann_path", "eval_file_path"), ("image_path", "img_path")):
        named = f"{key}.{alias}" if section[alias] else f"{key}.build_info.{path_key}"
        value = section.build_info[path_key]
        if not value:
            checker.fail(named, "missing")
        if not resolve_path(value).exists():
            checker.fail(named, f"path '{value}' does not exist")
    for split, processor in section.vis_processor.items():
        _check_processor(processor, f"{key}.vis_processor.{split}", checker)
        if split == "eval":  # the one eval.py uses
            _check_input_size(processor, f"{key}.vis_processor.{split}", config.model, checker)


def _check_input_size(processor: DictConfig, key: str, model: DictConfig, checker: Checker) -> None:
    """Images must come at the size the model splits and encodes, normalised as its tower expects."""
    _check_normalisation(processor, key, model, checker)
    expected = input_image_size(model)
    size = processor.get("image_size")
    if size is None:  # the processor's own default
        try:
            processor_class = registry.get("processor", processor.get("name"))
        except KeyError:
            return  # an unknown processor: _check_processor says so where it applies
        parameter = inspect.signature(processor_class.__init__).parameters.get("image_size")
        size = parameter.default if parameter is not None else None
    if size is not None and size != expected:
        tower_size = f"model.image_size {model.image_size}" if model.image_size else \
            f"{tower_shape(model).image_size}, {model.vit_model}'s own"
        how = f"{tower_size} x sub_image_grid {model.sub_image_grid}" if model.sub_image_grid > 1 else tower_size
        checker.fail(f"{key}.image_size", f"{size}, but the model takes {expected}-pixel images ({how})")


def _check_normalisation(processor: DictConfig, key: str, model: DictConfig, checker: Checker) -> None:
    """A mean or std the processor sets must be the tower's (left unset, the loader writes the tower's in)."""
    shape = tower_shape(model)
    for stat, expected in (("mean", shape.mean), ("std", shape.std)):
        value = processor.get(stat)
        if value is not None and [round(float(v), 6) for v in value] != [round(float(v), 6) for v in expected]:
            checker.fail(f"{key}.{stat}", f"{list(value)}, but the vision tower '{model.vit_model}' takes pixels "
                                          f"normalised with {stat} {list(expected)}: leave it unset")


def _check_processor(processor: DictConfig, key: str, checker: Checker) -> None:
    """A registered processor, given only options its constructor takes."""
    if "name" not in processor:
        checker.fail(f"{key}.name", "missing processor name")
    try:
        processor_class = registry.get("processor", processor.name)
    except KeyError as error:
        checker.fail(f"{key}.name", str(error.args[0]))
    accepted = inspect.signature(processor_class.__init__).parameters
    for option in processor:
        if option != "name" and option not in accepted:
            checker.fail(f"{key}.{option}", f"unknown option for processor '{processor.name}'")
