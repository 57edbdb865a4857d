"""Config loading: defaults merged under the user's file, --options on top, errors naming key and file."""
import dataclasses
import typing
from pathlib import Path

import pytest
from local_hub import default_weights_cached  # noqa: F401  (a fixture)
from omegaconf import OmegaConf

from minigpt.common import registry
from minigpt.common.errors import ConfigError
from minigpt.common.schema import (ALLOWED, AdapterConfig, EvalOptions, ExtraEncoderConfig, ModelConfig, OneOf,
                                   PartConfig, RunConfig)
from minigpt.config.loader import load_config, parse_options

REPO = Path(__file__).resolve().parents[1]

# MiniGPT-4's configs keep the model's default weights (EVA ViT-g, the Q-Former), which are fetched by
# URL: here they are in a cache already, so that no test goes to the network (tests/test_fetch.py fetches).
pytestmark = pytest.mark.usefixtures("default_weights_cached")

# The original MiniGPT-4 repository's train/eval configs, key for key, with the paths a user fills in
# left as placeholders (tests substitute real files).
ORIGINAL_STAGE1 = """
model:
  arch: minigpt4
  model_type: pretrain_vicuna0
datasets:
  laion:
    batch_size: 64
    vis_processor:
      train:
        name: "blip2_image_train"
        image_size: 224
    text_processor:
      train:
        name: "blip_caption"
    sample_ratio: 115
  cc_sbu:
    batch_size: 64
    vis_processor:
        train:
          name: "blip2_image_train"
          image_size: 224
    text_processor:
        train:
          name: "blip_caption"
    sample_ratio: 14
run:
  task: image_text_pretrain
  lr_sched: "linear_warmup_cosine_lr"
  init_lr: 1e-4
  min_lr: 8e-5
  warmup_lr: 1e-6
  weight_decay: 0.05
  max_epoch: 4
  num_workers: 4
  warmup_steps: 5000
  iters_per_epoch: 5000
  seed: 42
  output_dir: "output/minigpt4_stage1_pretrain"
  amp: True
  resume_ckpt_path: null
  evaluate: False
  train_splits: ["train"]
  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
  wandb_log: True
  job_name: minigpt4_pretrain
"""

ORIGINAL_STAGE2 = """
model:
  arch: minigpt4
  model_type: pretrain_vicuna0
  max_txt_len: 160
  end_sym: "###"
  prompt_path: "prompts/alignment.txt"
  prompt_template: '###Human: {} ###Assistant: '
  ckpt: '/path/to/stage1/checkpoint/'
datasets:
  cc_sbu_align:
    vis_processor:
      train:
        name: "blip2_image_train"
        image_size: 224
    text_processor:
      train:
        name: "blip_caption"
run:
  task: image_text_pretrain
  lr_sched: "linear_warmup_cosine_lr"
  init_lr: 3e-5
  min_lr: 1e-5
  warmup_lr: 1e-6
  weight_decay: 0.05
  max_epoch: 5
  iters_per_epoch: 200
  batch_size_train: 12
  batch_size_eval: 12
  num_workers: 4
  warmup_steps: 200
  seed: 42
  output_dir: "output/minigpt4_stage2_finetune"
  amp: True
  resume_ckpt_path: null
  evaluate: False
  train_splits: ["train"]
  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
"""

ORIGINAL_LLAMA2_EVAL = """
model:
  arch: mini_gpt4
  model_type: pretrain_llama2
  max_txt_len: 160
  end_sym: "</s>"
  low_resource: True
  prompt_template: '[INST] {} [/INST] '
  ckpt: '/path/to/pretrained_minigpt4_llama2_7b.pth'
  llama_model: "/path/to/llama-2-7b-chat"
datasets:
  cc_sbu_align:
    vis_processor:
      train:
        name: "blip2_image_eval"
        image_size: 224
    text_processor:
      train:
        name: "blip_caption"
run:
  task: image_text_pretrain
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def fake_files(tmp_path):
    """Stand-ins for the files a user points the original configs at."""
    llm = tmp_path / "vicuna"
    llm.mkdir()
    for name in ("config.json", "tokenizer.model"):  # what a Hugging Face LLM folder must hold
        (llm / name).write_text("{}")
    shards = tmp_path / "shards"
    shards.mkdir()
    for index in range(3):
        (shards / f"{index:05d}.tar").write_bytes(b"")
    align = tmp_path / "cc_sbu_align"
    align.mkdir()
    ckpt = tmp_path / "stage1.pth"
    ckpt.write_bytes(b"")
    return {"llm": llm, "shards": f"{shards}/{{00000..00002}}.tar", "align": align, "ckpt": ckpt}


def test_original_stage1_config_loads_with_paths_filled(tmp_path, fake_files):
    config = load_config(write(tmp_path, ORIGINAL_STAGE1), [
        f"model.llama_model={fake_files['llm']}",
        f"datasets.laion.build_info.storage={fake_files['shards']}",
        f"datasets.cc_sbu.build_info.storage={fake_files['shards']}",
    ])
    assert config.model.num_query_token == 32  # from the vicuna0 model defaults
    assert config.model.parts.projector.mode == "full" and config.model.parts.llm.mode == "frozen"
    assert config.datasets.laion.sample_ratio == 115 and config.datasets.cc_sbu.batch_size == 64
    assert config.run.init_lr == pytest.approx(1e-4) and config.run.iters_per_epoch == 5000


def test_minigpt4_settings_that_change_nothing_are_reported_as_ignored(tmp_path, fake_files, capsys):
    path = write(tmp_path, ORIGINAL_STAGE1)
    load_config(path, [f"model.llama_model={fake_files['llm']}", f"datasets.laion.build_info.storage={fake_files['shards']}",
                       f"datasets.cc_sbu.build_info.storage={fake_files['shards']}"])
    report = capsys.readouterr().err
    assert report.startswith(f"{path}: ignored") and len(report.splitlines()) == 1
    for key in ("run.task", "run.evaluate", "run.train_splits", "run.world_size", "run.dist_url", "run.distributed"):
        assert key in report
    load_config(REPO / "train_configs/tiny_stage1.yaml", [f"model.tokenizer={fake_files['llm']}",
                                                          f"datasets.cc_sbu.build_info.storage={fake_files['shards']}"])
    assert "ignored" not in capsys.readouterr().err  # the shipped tiny configs set none of them


def test_original_stage2_config_loads_with_paths_filled(tmp_path, fake_files):
    config = load_config(write(tmp_path, ORIGINAL_STAGE2), [
        f"model.llama_model={fake_files['llm']}", f"model.ckpt={fake_files['ckpt']}",
        f"datasets.cc_sbu_align.build_info.storage={fake_files['align']}",
    ])
    assert config.model.end_sym == "###" and config.run.batch_size_train == 12
    assert config.model.prompt_template == "###Human: {} ###Assistant: "


def test_checkpoint_paths_are_found_from_any_working_directory(tmp_path, fake_files, monkeypatch):
    """A relative model.ckpt / run.resume_ckpt_path is found as validation finds it (the working directory,
    then the repository), and the config holds where: the run reads it later."""
    (tmp_path / "runs" / "stage1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, ORIGINAL_STAGE2), [
        f"model.llama_model={fake_files['llm']}", "model.ckpt=runs/stage1", "run.resume_ckpt_path=runs/stage1",
        f"datasets.cc_sbu_align.build_info.storage={fake_files['align']}"])
    assert config.model.ckpt == config.run.resume_ckpt_path == str(tmp_path / "runs" / "stage1")
    in_repo = load_config(Path(__file__).parents[1] / "eval_configs/tiny_eval.yaml",
                          ["model.ckpt=eval_configs", f"model.tokenizer={fake_files['llm']}"], for_training=False)
    assert in_repo.model.ckpt == str(Path(__file__).parents[1] / "eval_configs")  # not in tmp_path: the repository's


def test_original_eval_config_loads_without_dataset_paths(tmp_path, fake_files):
    config = load_config(write(tmp_path, ORIGINAL_LLAMA2_EVAL), [
        f"model.llama_model={fake_files['llm']}", f"model.ckpt={fake_files['ckpt']}"], for_training=False)
    assert config.model.has_qformer is False  # the Llama-2 variant has no Q-Former
    assert config.model.low_resource is True


def test_unfilled_path_names_key_and_file(tmp_path):
    path = write(tmp_path, ORIGINAL_STAGE2)
    with pytest.raises(ConfigError) as error:
        load_config(path, ["model.llama_model=/nowhere/vicuna"])
    assert error.value.key == "model.llama_model" and error.value.source == "--options"
    assert "/nowhere/vicuna" in str(error.value) and "does not exist" in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_config(path, [f"model.llama_model={tmp_path}"])
    assert error.value.key == "model.ckpt" and error.value.source == str(path)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "model:\n  arch: minigpt4\n  max_txt_lenn: 10\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, for_training=False)
    assert error.value.key == "model.max_txt_lenn" and error.value.source == str(path)
    assert "unknown key" in str(error.value)


def test_unknown_dataset_option_and_processor_option(tmp_path, fake_files):
    base = f"model:\n  llama_model: {fake_files['llm']}\ndatasets:\n  laion:\n    batch_size: 2\n"
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, base + "    sampel_ratio: 3\n"), [f"datasets.laion.build_info.storage={fake_files['shards']}"])
    assert error.value.key == "datasets.laion.sampel_ratio"
    text = base + "    vis_processor:\n      train: {name: blip2_image_train, image_sise: 3}\n"
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), [f"datasets.laion.build_info.storage={fake_files['shards']}"])
    assert error.value.key == "datasets.laion.vis_processor.train.image_sise"


def test_wrong_type_names_key_and_file(tmp_path):
    path = write(tmp_path, "run:\n  max_epoch: many\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, for_training=False)
    assert error.value.key == "run.max_epoch" and error.value.source == str(path)
    assert "many" in str(error.value)


@pytest.mark.parametrize("option, problem", [
    ("run.max_grad_norm=-1", "must be > 0, got -1"), ("run.iters_per_epoch=0", "must be > 0, got 0"),
    ("run.iters_per_epoch=-3", "must be > 0, got -3"), ("run.ckpt_freq=0", "must be > 0"),
    ("run.warmup_steps=-1", "must be >= 0, got -1"), ("run.weight_decay=-0.1", "must be >= 0"),
    ("run.num_workers=-2", "must be >= 0"), ("run.beta2=1.5", r"must be in \[0, 1\), got 1.5"),
    ("datasets.laion.batch_size=0", "must be > 0, got 0"),
    ("model.chat_prompt=vicuna", "'vicuna' is not one of auto, training, vicuna_v0, llama2, minigptv2")])
def test_out_of_range_numbers_name_the_key(tmp_path, fake_files, option, problem):
    """Caught before any model is built: a negative clipping norm would flip every gradient, an
    iters_per_epoch of -3 would train nothing and exit as if done."""
    with pytest.raises(ConfigError, match=rf"{option.split('=')[0]}: {problem}"):
        load_config(write(tmp_path, "datasets:\n  laion:\n    batch_size: 2\n"),
                    [f"model.llama_model={fake_files['llm']}", f"datasets.laion.build_info.storage={fake_files['shards']}", option])


def test_the_runner_minigpt4_configs_name_is_accepted_and_no_other(tmp_path, fake_files):
    """`run.runner: runner_base` (or runner_iter), as MiniGPT-4's configs write it, names the one training
    recipe; any other name is refused before anything is built, naming the known ones."""
    path = write(tmp_path, f"model:\n  llama_model: {fake_files['llm']}\n")
    for name in ("runner_base", "runner_iter"):
        assert load_config(path, [f"run.runner={name}"], for_training=False).run.runner == name
    with pytest.raises(ConfigError, match="run.runner: 'runner_epoch' is not runner_base or runner_iter"):
        load_config(path, ["run.runner=runner_epoch"], for_training=False)


def test_options_override_file_and_defaults(tmp_path, fake_files):
    path = write(tmp_path, f"model:\n  llama_model: {fake_files['llm']}\n  max_txt_len: 100\n")
    config = load_config(path, ["model.max_txt_len=42", "run.init_lr=5e-5", "model.parts.llm.mode=full"],
                         for_training=False)
    assert config.model.max_txt_len == 42 and config.run.init_lr == pytest.approx(5e-5)
    assert config.model.parts.llm.mode == "full"


def test_options_accept_minigpt4_pairs():
    assert OmegaConf.to_container(parse_options(["run.seed", "3"])) == {"run": {"seed": 3}}
    with pytest.raises(ConfigError):
        parse_options(["run.seed"])


def test_legacy_freeze_switches_map_onto_parts(tmp_path, fake_files):
    path = write(tmp_path, f"model:\n  llama_model: {fake_files['llm']}\n  freeze_vit: False\n  freeze_qformer: False\n")
    config = load_config(path, for_training=False)
    assert config.model.parts.vision_encoder.mode == "full" and config.model.parts.qformer.mode == "full"


def test_bad_part_mode_and_unknown_arch(tmp_path, fake_files):
    path = write(tmp_path, f"model:\n  llama_model: {fake_files['llm']}\n  parts:\n    llm: {{mode: thawed}}\n")
    with pytest.raises(ConfigError, match="model.parts.llm.mode"):
        load_config(path, for_training=False)
    with pytest.raises(ConfigError, match="unknown model 'gpt5'"):
        load_config(write(tmp_path, "model:\n  arch: gpt5\n"), for_training=False)


def test_shipped_configs_parse(tmp_path, monkeypatch):
    """Every shipped config loads (paths aside, which the user fills in or the data script makes, and the
    released weights, which `minigpt download` fetches: offline here, so nothing is fetched)."""
    monkeypatch.setenv("MINIGPT_OFFLINE", "1")
    for path in sorted((REPO / "train_configs").glob("*.yaml")) + sorted((REPO / "eval_configs").glob("*.yaml")):
        try:
            load_config(path, for_training=False)
        except ConfigError as error:
            assert "does not exist" in error.problem or "fetch it with: minigpt download" in error.problem, \
                f"{path}: {error}"
            assert "Hugging Face hub" not in error.problem, f"{path}: {error}"  # never a path read as a hub name


def builder_config_classes() -> dict[type, str]:
    """Each registered builder's options class -> the first name it is registered under."""
    classes: dict[type, str] = {}
    for name in registry.names("builder"):
        classes.setdefault(registry.get("builder", name).config_class, name)
    return classes


def limited_fields() -> list[tuple[type, str, typing.Any]]:
    """(the schema class that declares it, field name, its OneOf or Bounds) for every field with allowed
    values in any section a config may hold, nested classes included, each field once."""
    todo = [ModelConfig, RunConfig, EvalOptions, *builder_config_classes()]
    seen, found = set(), {}
    while todo:
        schema = todo.pop()
        if schema in seen:
            continue
        seen.add(schema)
        for field in dataclasses.fields(schema):
            owner = next(c for c in schema.__mro__ if field.name in vars(c).get("__annotations__", {}))
            if ALLOWED in field.metadata:
                found[(owner, field.name)] = field.metadata[ALLOWED]
        hints = list(typing.get_type_hints(schema).values())
        while hints:  # the dataclasses nested in Optional[...], List[...], Dict[str, ...]
            hint = hints.pop()
            hints += typing.get_args(hint)
            if dataclasses.is_dataclass(hint):
                todo.append(hint)
    return [(owner, name, limit) for (owner, name), limit in found.items()]


def outside(limit) -> typing.Any:
    """A value the limit refuses."""
    if isinstance(limit, OneOf):
        return max(limit.values) + 1 if all(isinstance(v, int) for v in limit.values) else "no_such_value"
    for bound, step in ((limit.above, 0), (limit.at_least, -1), (limit.below, 0)):
        if bound is not None:
            return bound + step
    raise AssertionError(f"{limit} limits nothing")


def setting(owner: type, name: str, value) -> tuple[str, str]:
    """The --options entry that sets field `name` of a section made from `owner`, and its dotted key."""
    if owner is ExtraEncoderConfig:  # a list entry is written whole
        return f"model.extra_encoders=[{{timm_model: convnext_atto, {name}: {value}}}]", f"model.extra_encoders.0.{name}"
    if owner is EvalOptions:  # an evaluation section names its builder
        return f"evaluation_datasets.vqa={{builder: sharegpt4v, {name}: {value}}}", f"evaluation_datasets.vqa.{name}"
    places = {ModelConfig: "model", PartConfig: "model.parts.llm", AdapterConfig: "model.adapters.vqa", RunConfig: "run"}
    builder = next((b for schema, b in builder_config_classes().items() if issubclass(schema, owner)), None)
    place = places.get(owner) or (f"datasets.{builder}" if builder else None)
    assert place, f"say in setting() where a section made from {owner.__name__} sits in a config"
    return f"{place}.{name}={value}", f"{place}.{name}"


@pytest.mark.parametrize("owner, name, limit", [pytest.param(*field, id=f"{field[0].__name__}.{field[1]}")
                                               for field in limited_fields()])
def test_every_declared_limit_is_checked(owner, name, limit):
    """A field declared with choice() or number() in the schema (or a builder's options) is checked without
    a check of its own: a value outside its limit fails, naming the key (and the values a choice allows)."""
    option, key = setting(owner, name, outside(limit))
    with pytest.raises(ConfigError) as error:
        load_config("train_configs/tiny_stage1.yaml", [option], for_planning=True,
                    for_evaluation=owner is EvalOptions)
    assert error.value.key == key, error.value
    if isinstance(limit, OneOf):
        assert all(str(value) in error.value.problem for value in limit.values), error.value


def test_limited_fields_are_found():
    """The walk above reaches nested sections, eval.py's options and a builder's own options."""
    found = {(owner.__name__, name) for owner, name, _ in limited_fields()}
    assert {("PartConfig", "mode"), ("ExtraEncoderConfig", "mode"), ("AdapterConfig", "r"), ("ModelConfig", "proj_type"),
            ("RunConfig", "beta2"), ("DatasetConfig", "batch_size"), ("EvalOptions", "choice_scoring"),
            ("ParagraphGalleryConfig", "writer")} <= found
