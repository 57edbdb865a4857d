"""Where the default YAMLs shipped with the package are: minigpt/defaults/models/ (one per model type) and
minigpt/defaults/datasets/<builder>/default.yaml. The loader merges them under a user's config.

The folder was once minigpt/configs/, a name one letter away from minigpt/config/, the loader itself. A
model class copied from an older release or from MiniGPT-4 names its YAML under the old name
("configs/models/x.yaml"), and a user's own builder may have its default YAML in the old folder; both keep
loading for one release, each with a DeprecationWarning.
"""
from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath

from minigpt.common.moved import REMOVED_IN
from minigpt.common.paths import PACKAGE_ROOT

DEFAULTS = PACKAGE_ROOT / "defaults"
OLD_DEFAULTS = PACKAGE_ROOT / "configs"  # the folder's name until this release


def _warn_old_folder(what: str) -> None:
    warnings.warn(f"{what}: the default YAMLs moved from minigpt/{OLD_DEFAULTS.name}/ to minigpt/{DEFAULTS.name}/; "
                  f"the old folder goes in minigpt {REMOVED_IN}", DeprecationWarning, stacklevel=3)


def model_defaults(relative: str) -> Path:
    """The file a model class's `default_configs` names, relative to the package ("defaults/models/x.yaml").
    An old "configs/..." name is found in the renamed folder, or in the old one while a user's own file is
    still there."""
    first, *rest = PurePosixPath(relative).parts or ("",)
    if first != OLD_DEFAULTS.name:
        return PACKAGE_ROOT / relative
    _warn_old_folder(relative)
    moved, old = DEFAULTS.joinpath(*rest), OLD_DEFAULTS.joinpath(*rest)
    return old if old.exists() and not moved.exists() else moved


def dataset_defaults(builder_name: str) -> Path | None:
    """The default YAML of a data set builder, or None when it has none. One a user added under the old
    folder (minigpt/configs/datasets/<name>/default.yaml) is still found."""
    path = DEFAULTS / "datasets" / builder_name / "default.yaml"
    if path.exists():
        return path
    old = OLD_DEFAULTS / "datasets" / builder_name / "default.yaml"
    if old.exists():
        _warn_old_folder(f"{OLD_DEFAULTS.name}/datasets/{builder_name}/default.yaml")
        return old
    return None
