"""`minigpt download`: the released models' files by name, fetched into the caches the configs read, so
that a shipped config runs as written. Every download here comes from tests/local_hub.py's server, which
plays the Hugging Face hub, a plain file server and Google Drive (with its confirmation page); a tiny
catalogue stands in for the real one where bytes must flow."""
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml
from local_hub import go_offline, local_hub, sharded_weights  # noqa: F401  (local_hub is a fixture)
from omegaconf import OmegaConf
from transformers import Blip2QFormerConfig, Blip2QFormerModel
from test_fetch import eva_weights, llama_folder  # noqa: F401  (fixtures)

from conftest import REPO
from minigpt.cli.main import main
from minigpt.common.errors import FetchError, MissingExtraError
from minigpt.common.fetch import (LLM_FOLDER, WEIGHTS_FOLDER, download_drive_file, drive_cache_path, parse_source,
                                  resolve_source, url_cache_path)
from minigpt.config.loader import model_section, shipped_configs
from minigpt.models.hf_blip2 import VISION_PREFIXES, to_blip2_vision, vision_weights
from minigpt.ops import assets
from minigpt.ops.assets import Asset, AssetFile, files_of

DRIVE_ID = "1TinyMiniGPT4CheckpointOnDrive000"
QFORMER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
           "cross_attention_frequency": 1}  # tiny_eval's
MODEL_FILE_KEYS = ("llama_model", "tokenizer", "ckpt", "vit_model", "vit_weights", "q_former_model")


def fetched_values(name: str) -> set[str]:
    return {file.value for file in files_of(name)}


def remote_model_values(config_name: str, options: tuple[str, ...] = ()) -> set[str]:
    """What a shipped config's model section names that has to be fetched (URLs, hub, Drive)."""
    model = model_section(config_name, list(options))
    values = {str(model[key]) for key in MODEL_FILE_KEYS if model.get(key)}
    return {value for value in values if parse_source(value).kind != "path"}


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("minigpt download: error: "), lines[0]
    return lines[0].removeprefix("minigpt download: error: ")


# ---- the catalogue and the shipped configs ---------------------------------------------------------
def test_the_list_shows_every_name_and_the_config_each_bundle_runs(capsys):
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    for name, asset in assets.CATALOGUE.items():
        assert f"  {name} " in listing, name
        if asset.config:
            assert asset.config in shipped_configs() and f"--cfg-path {asset.config}" in listing
        if asset.options:
            assert " ".join(["--options", *asset.options]) in listing
    assert "Vision-CAIR/vicuna-7b" in listing and "13.5 GB" in listing  # what a part is, and about how big


@pytest.mark.parametrize("bundle", [name for name, asset in assets.CATALOGUE.items() if asset.config])
def test_a_bundle_fetches_exactly_what_its_config_names(bundle):
    """Downloaded, the bundle leaves its config nothing to fetch, and fetches nothing the config does not use."""
    asset = assets.CATALOGUE[bundle]
    assert fetched_values(bundle) == remote_model_values(asset.config, asset.options)


def test_every_released_config_names_files_the_catalogue_fetches():
    """The shipped configs of the released models run once downloaded: no /path/to placeholder for a
    weights file is left, and every file they name to fetch has a name in `minigpt download --list`."""
    catalogued = {file.value for name in assets.CATALOGUE for file in files_of(name)}
    released = {name: path for name, path in shipped_configs().items() if name.startswith("minigpt")}
    assert len(released) >= 14
    for name, path in released.items():
        model = model_section(name)
        for key in MODEL_FILE_KEYS:
            assert "/path/to" not in str(model.get(key)), f"{name}: model.{key} = {model.get(key)}"
        assert remote_model_values(name) <= catalogued, name
    assert model_section("minigptv2_finetune").ckpt == files_of("minigptv2-stage2-checkpoint")[0].value
    stage1_output = OmegaConf.load(released["minigpt4_stage1_pretrain"]).run.output_dir
    assert Path(model_section("minigpt4_stage2_finetune").ckpt) == Path(stage1_output)  # its newest checkpoint


def test_an_unknown_name_is_one_line_naming_the_close_ones(local_hub, capsys):
    assert main(["download", "vicuna-7b-v0", "vicuna7b"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("no asset named 'vicuna7b' (close: vicuna-7b-v0") and "--list" in line
    assert sum(local_hub.requests.values()) == 0  # every name is checked before anything is fetched
    assert main(["download"]) == 2 and "--list" in one_error_line(capsys.readouterr().err)


def test_a_gated_repo_says_accept_the_licence_and_log_in(local_hub, capsys):
    local_hub.add_repo("meta-llama/Llama-2-7b-chat-hf", {"config.json": b"{}"}, gated=True)
    assert main(["download", "llama-2-7b-chat"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "llama-2-7b-chat: meta-llama/Llama-2-7b-chat-hf is gated: accept its licence at "
        "https://huggingface.co/meta-llama/Llama-2-7b-chat-hf and run `hf auth login` (or set HF_TOKEN)")
    assert set(local_hub.statuses) == {401}


# ---- what a name fetches ---------------------------------------------------------------------------
@pytest.fixture
def tiny_catalogue(monkeypatch, local_hub, llama_folder, eva_weights):
    """A catalogue of three parts on the local server (a hub LLM, a URL, a Drive file) and a bundle of them."""
    pytest.importorskip("gdown")
    local_hub.add_repo("tiny-org/tiny-llama", llama_folder)
    local_hub.files["eva_vit_tiny.pth"] = eva_weights.read_bytes()
    local_hub.drive_files[DRIVE_ID] = bytes(range(256)) * 40  # above the scan limit: Drive asks to confirm
    catalogue = {asset.name: asset for asset in (
        Asset("tiny-llm", "a tiny Llama", (AssetFile("tiny-org/tiny-llama", LLM_FOLDER),)),
        Asset("tiny-eva", "a tiny EVA ViT", (AssetFile(local_hub.file_url("eva_vit_tiny.pth")),)),
        Asset("tiny-checkpoint", "on Drive", (AssetFile(f"gdrive://{DRIVE_ID}/tiny.pth"),)),
        Asset("tiny-bundle", "all three", parts=("tiny-checkpoint", "tiny-llm", "tiny-eva")),
    )}
    monkeypatch.setattr(assets, "CATALOGUE", catalogue)
    return catalogue


def test_a_name_fetches_exactly_its_files_once(tiny_catalogue, local_hub, llama_folder, monkeypatch, capsys):
    assert main(["download", "tiny-bundle"]) == 0
    printed = capsys.readouterr().out.splitlines()
    eva = url_cache_path(local_hub.file_url("eva_vit_tiny.pth"))
    drive = drive_cache_path(DRIVE_ID, "tiny.pth")
    assert printed[0].startswith(f"tiny-bundle: gdrive://{DRIVE_ID}/tiny.pth -> {drive} (")
    assert f"tiny-bundle: {local_hub.file_url('eva_vit_tiny.pth')} -> {eva} (" in printed[2]
    snapshot = Path(printed[1].split(" -> ")[1].split(" (")[0])
    assert sorted(path.name for path in snapshot.iterdir()) == sorted(
        path.name for path in llama_folder.iterdir() if path.name not in ("pytorch_model.bin", "README.md"))
    assert local_hub.asked("/resolve/main/pytorch_model.bin") == 0 and local_hub.asked("/resolve/main/README.md") == 0
    assert local_hub.asked("/files/eva_vit_tiny.pth") == 1 and local_hub.asked("/uc") == 1
    assert drive.read_bytes() == local_hub.drive_files[DRIVE_ID]
    asked = sum(local_hub.requests.values())
    assert main(["download", "tiny-bundle", "tiny-llm"]) == 0  # all cached: nobody is asked anything
    assert sum(local_hub.requests.values()) == asked
    assert capsys.readouterr().out.splitlines()[:3] == printed

    go_offline(monkeypatch, local_hub)  # offline, server gone: the caches answer
    assert main(["download", "tiny-bundle"]) == 0
    assert capsys.readouterr().out.splitlines() == printed


def test_offline_a_name_not_yet_fetched_says_so_in_one_line(tiny_catalogue, local_hub, monkeypatch, capsys):
    go_offline(monkeypatch, local_hub)
    assert main(["download", "tiny-eva"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("tiny-eva: ") and "downloads are off (HF_HUB_OFFLINE=1)" in line


def test_a_url_hub_name_or_drive_file_is_fetched_as_given(tiny_catalogue, local_hub, monkeypatch, capsys):
    """So that the offline error's advice, `minigpt download <value>`, works for any value."""
    url = local_hub.file_url("eva_vit_tiny.pth")
    assert main(["download", url, "tiny-org/tiny-llama", f"gdrive://{DRIVE_ID}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{url} -> {url_cache_path(url)} (")
    assert lines[1].startswith("tiny-org/tiny-llama -> ") and "files" in lines[1]
    assert lines[2].startswith(f"gdrive://{DRIVE_ID} -> {drive_cache_path(DRIVE_ID)} (")
    assert local_hub.asked("/resolve/main/pytorch_model.bin") == 0  # a model folder: no pickles beside safetensors
    go_offline(monkeypatch, local_hub)
    path = resolve_source("tiny-org/tiny-llama", "model.llama_model", want="folder", allow_patterns=LLM_FOLDER)
    assert (path / "model.safetensors").is_file()  # what the config setting reads is there, offline


# ---- sharded hub repositories ----------------------------------------------------------------------
@pytest.fixture
def blip2_repo(local_hub, eva_weights):
    """A BLIP-2-style repository of three shards: the ViT (and post_layernorm), the Q-Former and its query
    tokens, and the language model (the biggest, which MiniGPT never reads)."""
    torch.manual_seed(2)
    vision = {**torch.load(eva_weights), "ln_vision.weight": torch.rand(64), "ln_vision.bias": torch.rand(64)}
    qformer = Blip2QFormerModel(Blip2QFormerConfig(encoder_hidden_size=64, **QFORMER))
    shards = [{f"vision_model.{key}": value.contiguous() for key, value in to_blip2_vision(vision).items()},
              {**{f"qformer.{key}": value for key, value in qformer.state_dict().items()},
               "query_tokens": torch.randn(1, 8, 64)},
              {"language_model.lm_head.weight": torch.randn(512, 256)}]
    files = {"config.json": json.dumps({"model_type": "blip-2"}).encode(), **sharded_weights(shards)}
    local_hub.add_repo("tiny-org/tiny-blip2", files)
    return files


def test_a_blip2_repo_fetches_only_the_shards_holding_the_vit_and_qformer(local_hub, blip2_repo, eva_weights,
                                                                           monkeypatch, capsys):
    folder = resolve_source("tiny-org/tiny-blip2", "model.vit_weights", want="any", allow_patterns=WEIGHTS_FOLDER,
                            weight_prefixes=VISION_PREFIXES)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model-00001-of-00003.safetensors",
                                                              "model.safetensors.index.json"]
    expected = torch.load(eva_weights)
    loaded = vision_weights(folder)  # reads the ViT's shard alone: the others are not there
    assert sorted(loaded) == sorted(expected) and all(torch.equal(loaded[key], expected[key]) for key in expected)

    assert main(["download", "tiny-org/tiny-blip2"]) == 0  # given directly: a BLIP-2 repo's ViT and Q-Former
    assert sorted(path.name for path in folder.iterdir() if path.suffix == ".safetensors") == [
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"]
    assert local_hub.asked("model-00003-of-00003.safetensors") == 0
    assert "tiny-org/tiny-blip2 -> " in capsys.readouterr().out


# ---- Google Drive ----------------------------------------------------------------------------------
@pytest.fixture
def drive_file(local_hub):
    pytest.importorskip("gdown")
    local_hub.drive_files[DRIVE_ID] = bytes(range(256)) * 400  # 100 KiB: above the scan limit
    return local_hub.drive_files[DRIVE_ID]


def test_drives_confirmation_page_is_followed_and_the_file_lands_verified(local_hub, drive_file):
    path = download_drive_file(DRIVE_ID, "checkpoint.pth")
    assert path == drive_cache_path(DRIVE_ID, "checkpoint.pth") and path.read_bytes() == drive_file
    assert len(local_hub.drive_uuids) == 1  # one page, whose form's uuid fetched the file
    assert local_hub.asked("/uc") == 1 and local_hub.asked("/download") == 2
    record = path.with_name("checkpoint.pth.sha256").read_text().split()[0]
    assert record == hashlib.sha256(drive_file).hexdigest()
    assert download_drive_file(DRIVE_ID, "checkpoint.pth") == path and local_hub.asked("/uc") == 1  # cached
    path.write_bytes(drive_file[:-1] + b"x")  # changed on disk: caught, removed, fetched afresh
    with pytest.raises(FetchError, match="sha256 mismatch"):
        download_drive_file(DRIVE_ID, "checkpoint.pth")
    assert download_drive_file(DRIVE_ID, "checkpoint.pth").read_bytes() == drive_file


def test_a_drive_download_cut_short_resumes_and_a_wrong_sha256_is_refused(local_hub, drive_file):
    local_hub.cut_transfers = 1
    assert download_drive_file(DRIVE_ID).read_bytes() == drive_file
    assert local_hub.ranges == [("/download", f"bytes={len(drive_file) // 2}-")]
    local_hub.drive_files["1SmallFileNoScanPage"] = b"small"
    assert download_drive_file("1SmallFileNoScanPage").read_bytes() == b"small"  # no page for a small file
    assert len(local_hub.drive_uuids) == 1
    with pytest.raises(FetchError, match="sha256 mismatch"):
        download_drive_file(DRIVE_ID, "other.pth", sha256="0" * 64)
    assert not drive_cache_path(DRIVE_ID, "other.pth").exists()


def test_drive_refusing_a_file_or_a_missing_gdown_is_one_line(local_hub, drive_file, monkeypatch):
    local_hub.drive_refused.add(DRIVE_ID)
    with pytest.raises(FetchError) as error:
        resolve_source(f"gdrive://{DRIVE_ID}/x.pth", "model.ckpt", want="any")
    assert str(error.value) == (f"model.ckpt: Google Drive does not serve file {DRIVE_ID} now (Too many users have "
                                "viewed or downloaded this file recently. Please try accessing the file again "
                                f"later.); download it in a browser from https://drive.google.com/file/d/{DRIVE_ID}"
                                "/view and give its path instead")
    monkeypatch.setitem(sys.modules, "gdown.download", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"Google Drive download needs gdown.*pip install '.*\[drive\]'"):
        download_drive_file(DRIVE_ID)


def test_drive_links_read_as_drive_files(tmp_path, monkeypatch):
    for link in (f"https://drive.google.com/file/d/{DRIVE_ID}/view?usp=sharing",
                 f"https://drive.google.com/uc?id={DRIVE_ID}&export=download", f"gdrive://{DRIVE_ID}"):
        source = parse_source(link)
        assert (source.kind, source.file_id, source.filename) == ("drive", DRIVE_ID, None), link
    assert parse_source(f"gdrive://{DRIVE_ID}/ckpt.pth").filename == "ckpt.pth"
    with pytest.raises(FetchError, match="gdrive://<file id>"):
        parse_source("gdrive://short/x.pth")
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path))
    assert drive_cache_path(DRIVE_ID, "ckpt.pth") == tmp_path / "gdrive" / DRIVE_ID / "ckpt.pth"


# ---- end to end: download by name, then chat, serve, eval and web offline ------------------------------
def tiny_checkpoint() -> bytes:
    """A MiniGPT-4 checkpoint as released ({"model": projector}), for tiny_eval's Q-Former (64) and the tiny
    Llama (32)."""
    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save({"model": {"llama_proj.weight": torch.randn(32, 64) * 0.2, "llama_proj.bias": torch.zeros(32)}},
               buffer)
    return buffer.getvalue()


def chat_config(tmp_path, eva_url: str):
    """tiny_eval.yaml naming its weights as a released config does: the LLM by hub name, the ViT by URL,
    the Q-Former by a BLIP-2 hub repository, the checkpoint on Drive."""
    config = yaml.safe_load((REPO / "eval_configs/tiny_eval.yaml").read_text())
    config["model"].update(llama_model="tiny-org/tiny-llama", tokenizer=None, vit_weights=eva_url,
                           q_former_model="tiny-org/tiny-blip2", ckpt=f"gdrive://{DRIVE_ID}/tiny_minigpt4.pth")
    del config["model"]["llama_config"], config["evaluation_datasets"]
    path = tmp_path / "released_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Released(NamedTuple):
    config: Path   # chat_config: the tiny model's files named as a released config names them
    eva_url: str


@pytest.fixture
def released_tiny(local_hub, llama_folder, eva_weights, blip2_repo, tmp_path, monkeypatch, capsys) -> Released:
    """The tiny MiniGPT-4's four sources (the LLM by hub name, the EVA ViT by URL, the Q-Former in a BLIP-2
    repository, the checkpoint on Drive) fetched by `minigpt download tiny-minigpt4`; then HF_HUB_OFFLINE=1
    and the server gone, so that only what was downloaded can answer."""
    pytest.importorskip("gdown")
    local_hub.add_repo("tiny-org/tiny-llama", llama_folder)
    local_hub.files["eva_vit_tiny.pth"] = eva_weights.read_bytes()
    local_hub.drive_files[DRIVE_ID] = tiny_checkpoint()
    eva_url = local_hub.file_url("eva_vit_tiny.pth")
    monkeypatch.setattr(assets, "CATALOGUE", {asset.name: asset for asset in (
        Asset("tiny-minigpt4", "the tiny model", (AssetFile(f"gdrive://{DRIVE_ID}/tiny_minigpt4.pth"),),
              parts=("tiny-llm", "tiny-eva", "tiny-qformer")),
        Asset("tiny-llm", "", (AssetFile("tiny-org/tiny-llama", LLM_FOLDER),)),
        Asset("tiny-eva", "", (AssetFile(eva_url),)),
        Asset("tiny-qformer", "", (AssetFile("tiny-org/tiny-blip2", WEIGHTS_FOLDER,
                                             assets.QFORMER_PREFIXES),)))})
    assert main(["download", "tiny-minigpt4"]) == 0
    assert local_hub.asked("model-00003-of-00003.safetensors") == 0  # the language model's shard stays there
    capsys.readouterr()
    go_offline(monkeypatch, local_hub)  # HF_HUB_OFFLINE=1, and the server is gone
    return Released(chat_config(tmp_path, eva_url), eva_url)


@pytest.fixture
def loads(monkeypatch) -> list:
    """[(config, model)] of every model a subcommand loads: chat, serve, web and eval all load through
    inference/loading.py's load_model, which builds by load_for_inference."""
    from minigpt.inference import loading

    recorded = []

    def recording(load):
        def load_for_inference(config, *args, **kwargs):
            model = load(config, *args, **kwargs)
            recorded.append((config, model))
            return model
        return load_for_inference

    monkeypatch.setattr(loading, "load_for_inference", recording(loading.load_for_inference))
    return recorded


def assert_the_downloaded_files_are_loaded(err: str, released: Released, blip2_repo: dict, loads: list,
                                           tmp_path: Path) -> None:
    """The load report names the cached EVA file and BLIP-2 shard with every tensor they hold, the config's
    four settings resolved to the caches `minigpt download` filled, and the projector is the Drive checkpoint's."""
    loaded = {line.split(": ")[0]: line.split(": ")[1] for line in err.splitlines() if "tensors loaded" in line}
    assert loaded[str(url_cache_path(released.eva_url))] == "30 tensors loaded"  # the served EVA file, every tensor
    blip2 = next(path for path in loaded if "models--tiny-org--tiny-blip2" in path)
    weight_map = json.loads(blip2_repo["model.safetensors.index.json"])["weight_map"]
    qformer = [key for key in weight_map if key.startswith("qformer.")]
    assert loaded[blip2] == f"{len(qformer) + 3} tensors loaded"  # Q-Former, query tokens, ln_vision weight and bias

    [(config, model)] = loads
    hub_cache = tmp_path / "hf"  # local_hub's HF_HOME
    assert Path(config.model.llama_model).is_relative_to(hub_cache)
    assert "models--tiny-org--tiny-llama" in config.model.llama_model
    assert Path(config.model.q_former_model).is_relative_to(hub_cache)
    assert "models--tiny-org--tiny-blip2" in config.model.q_former_model
    assert Path(config.model.vit_weights) == url_cache_path(released.eva_url)
    checkpoint = drive_cache_path(DRIVE_ID, "tiny_minigpt4.pth")
    assert Path(config.model.ckpt) == checkpoint
    projector = torch.load(checkpoint, weights_only=True)["model"]["llama_proj.weight"]
    assert torch.equal(model.state_dict()["llama_proj.weight"].detach().cpu().float(), projector)


def test_minigpt_chat_answers_offline_from_the_names_it_downloaded(released_tiny, blip2_repo, loads, shapes_dir,
                                                                   tmp_path, capsys):
    image = next((shapes_dir / "images").iterdir())
    code = main(["chat", "--cfg-path", str(released_tiny.config), "--image", str(image), "--prompt",
                 "What is in the image?", "--max-new-tokens", "6", "--json", "--save-dir", str(tmp_path / "demo")])
    out, err = capsys.readouterr()
    assert code == 0, err
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["question"] == "What is in the image?" and isinstance(answer["answer"], str) and answer["answer"]
    assert_the_downloaded_files_are_loaded(err, released_tiny, blip2_repo, loads, tmp_path)


def test_minigpt_serve_answers_offline_from_the_names_it_downloaded(released_tiny, blip2_repo, loads, shapes_dir,
                                                                    tmp_path, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from minigpt.cli import serve

    apps = []
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kwargs: apps.append(app))  # built, not listening
    images = shapes_dir / "images"
    code = main(["serve", "--cfg-path", str(released_tiny.config), "--name", "tiny", "--image-root", str(images)])
    err = capsys.readouterr().err
    assert code == 0 and len(apps) == 1, err
    assert_the_downloaded_files_are_loaded(err, released_tiny, blip2_repo, loads, tmp_path)
    image = next(images.iterdir()).name
    with TestClient(apps[0]) as client:
        reply = client.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 6, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is in the image?"},
                                         {"type": "image_url", "image_url": {"url": image}}]}]})
    assert reply.status_code == 200, reply.text
    [choice] = reply.json()["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]


def test_minigpt_eval_scores_offline_from_the_names_it_downloaded(released_tiny, blip2_repo, loads, shapes_dir,
                                                                  tmp_path, capsys):
    config = yaml.safe_load(released_tiny.config.read_text())  # the same sources, plus four held-out questions
    config["evaluation_datasets"] = {"shapes_test": {
        "builder": "sharegpt4v", "metric": "exact_match", "max_new_tokens": 4, "batch_size": 4, "subsample_count": 4,
        "build_info": {"ann_path": str(shapes_dir / "test.json"), "image_path": str(shapes_dir / "images")},
        "vis_processor": {"eval": {"name": "blip2_image_eval", "image_size": 64}}}}
    config["run"]["output_dir"] = str(tmp_path / "eval")
    path = tmp_path / "released_tiny_eval.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["eval", "--cfg-path", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    [scores] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert scores == json.loads((tmp_path / "eval" / "shapes_test" / "scores.json").read_text())
    assert scores["answered"] == 4 and scores["skipped"] == 0 and scores["metric"] == "exact_match"
    assert 0 <= scores["scores"]["exact_match"] <= 1
    assert_the_downloaded_files_are_loaded(err, released_tiny, blip2_repo, loads, tmp_path)


def test_minigpt_web_builds_its_page_offline_from_the_names_it_downloaded(released_tiny, blip2_repo, loads, tmp_path,
                                                                          monkeypatch, capsys):
    gradio = pytest.importorskip("gradio")
    launched = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda ui, **kwargs: launched.append((ui, kwargs)))  # no server
    code = main(["web", "--cfg-path", str(released_tiny.config), "--port", "7999",
                 "--tool-out", str(tmp_path / "tools")])
    err = capsys.readouterr().err
    assert code == 0 and len(launched) == 1, err
    ui, options = launched[0]
    assert isinstance(ui, gradio.Blocks) and ui.title == "MiniGPT: released_tiny" and options["server_port"] == 7999
    assert {"upload", "question", "send", "chat"} <= {getattr(block, "elem_id", None) for block in ui.blocks.values()}
    assert_the_downloaded_files_are_loaded(err, released_tiny, blip2_repo, loads, tmp_path)
