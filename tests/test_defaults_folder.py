"""The default YAMLs' folder (minigpt/defaults/, once minigpt/configs/): a model class or a user's builder
that names the old folder still loads for a release, with a DeprecationWarning."""
import warnings

import pytest

from minigpt.config import defaults
from minigpt.config.loader import load_config, model_section
from minigpt.models import MiniGPT4

OLD_NAMES = {"pretrain_vicuna0": "configs/models/minigpt4_vicuna0.yaml",
             "pretrain_llama2": "configs/models/minigpt4_llama2.yaml"}


def test_the_shipped_defaults_load_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        config = load_config("train_configs/tiny_stage1.yaml", for_planning=True)
    assert config.datasets.cc_sbu.resampled is False  # from defaults/datasets/cc_sbu/default.yaml


def test_a_model_class_naming_the_old_folder_gets_the_moved_file(monkeypatch):
    expected = model_section("minigpt4_stage1_pretrain")
    monkeypatch.setattr(MiniGPT4, "default_configs", OLD_NAMES)
    with pytest.warns(DeprecationWarning, match="configs/models/minigpt4_vicuna0.yaml: the default YAMLs moved "
                                                "from minigpt/configs/ to minigpt/defaults/"):
        assert model_section("minigpt4_stage1_pretrain") == expected


def test_a_users_file_left_in_the_old_folder_is_still_found(tmp_path, monkeypatch):
    """A checkout where the user had added their own default YAMLs under minigpt/configs/."""
    old = tmp_path / "configs"
    for relative, text in (("models/minigpt4_vicuna0.yaml", "model:\n  prompt: from the old folder\n"),
                           ("datasets/cc_sbu/default.yaml", "datasets:\n  cc_sbu:\n    resampled: true\n")):
        (old / relative).parent.mkdir(parents=True)
        (old / relative).write_text(text)
    monkeypatch.setattr(defaults, "OLD_DEFAULTS", old)
    monkeypatch.setattr(defaults, "DEFAULTS", tmp_path / "defaults")  # (not there: only the old folder is)
    monkeypatch.setattr(MiniGPT4, "default_configs", OLD_NAMES)
    with pytest.warns(DeprecationWarning) as caught:
        config = load_config("train_configs/tiny_stage1.yaml", for_planning=True)
    assert config.model.prompt == "from the old folder" and config.datasets.cc_sbu.resampled is True
    assert {str(w.message).split(":")[0] for w in caught} == {"configs/models/minigpt4_vicuna0.yaml",
                                                              "configs/datasets/cc_sbu/default.yaml"}
