"""Weights and data named by URL or on the Hugging Face hub: fetched once into the caches, verified, resumed
after a cut, found offline, and resolved by load_config into local paths before a model is built. Every
download here comes from tests/local_hub.py's server on 127.0.0.1."""
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from local_hub import go_offline, local_hub  # noqa: F401  (local_hub is a fixture)
from safetensors.torch import load_file

from conftest import REPO
from minigpt.common.errors import ConfigError, InputError
from minigpt.common.fetch import (ATTEMPTS, FetchError, cache_root, download_url, hub_file, hub_folder, parse_source,
                                  resolve_source, url_cache_path)
from minigpt.common.paths import HUB_NAME, resolve_model_folder
from minigpt.config.loader import load_config
from minigpt.config.sources import LLM_FOLDER

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB: several reads, and halfway is a real offset
TINY_VIT = {"patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 4.0}  # tiny_eval's


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A tiny Llama folder as the hub holds one: config, tokenizer, safetensors weights, and files no
    model load needs (a pickled copy of the weights, a README)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from minigpt.models.tokenizer import load_tokenizer, train_tokenizer

    folder = tmp_path_factory.mktemp("repo") / "tiny-llama"
    corpus = [f"a {colour} {shape} number {n}" for colour in ("red", "blue") for shape in ("circle", "square")
              for n in range(20)]
    tokenizer = load_tokenizer(train_tokenizer(corpus, folder, vocab_size=300))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(b"a pickled copy nobody should fetch")
    (folder / "README.md").write_text("# tiny\n")
    (folder / "corpus.sha256").unlink(missing_ok=True)
    return folder


@pytest.fixture(scope="module")
def eva_weights(tmp_path_factory):
    """An EVA-layout .pth (what load_eva_vit reads) for tiny_eval's encoder shape."""
    from minigpt.models.vision_encoder import build_vision_encoder

    torch.manual_seed(1)
    encoder, _ = build_vision_encoder("eva_clip_g", 64, vit_config=TINY_VIT)
    path = tmp_path_factory.mktemp("eva") / "eva_vit_tiny.pth"
    torch.save({key: value.clone() for key, value in encoder.state_dict().items()}, path)
    return path


# ---- reading a setting's value ---------------------------------------------------------------------
def test_a_value_reads_as_a_path_a_url_or_a_hub_name(tmp_path, monkeypatch):
    assert parse_source("https://host/x/eva.pth").kind == "url"
    assert parse_source("meta-llama/Llama-2-7b-chat-hf") == parse_source("meta-llama/Llama-2-7b-chat-hf")
    hub = parse_source("Salesforce/blip2-opt-2.7b@v1.0/sub/model.safetensors")
    assert (hub.kind, hub.repo_id, hub.revision, hub.filename) == ("hub", "Salesforce/blip2-opt-2.7b", "v1.0",
                                                                    "sub/model.safetensors")
    assert (parse_source("org/name@abc123").revision, parse_source("org/name@abc123").filename) == ("abc123", None)
    for path in ("/abs/eva.pth", "./org/name", "~/org/name", "data/{00000..00009}.tar", "data/*.tar", "eva.pth"):
        assert parse_source(path).kind == "path", path
    for name in ("meta-llama/Llama-2-7b-chat-hf", "Vision-CAIR/vicuna", "a/b", "x.y/z_1"):  # the old rule's names
        assert HUB_NAME.match(name) and parse_source(name).kind == "hub"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert parse_source("org/name").kind == "path"  # on this machine: a path, even though it looks like a name
    # What a setting cannot take stays a path: a folder setting takes org/name, a file setting a file in it.
    assert parse_source("data/shapes/tokenizer", want="folder").kind == "path"
    assert parse_source("data/train.json", want="file").kind == "path"
    assert parse_source("org/repo/eva.pth", want="file").kind == "hub"
    with pytest.raises(FetchError, match="only http:// and https:// URLs"):
        parse_source("s3://bucket/eva.pth")


def test_the_cache_root_follows_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIGPT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "minigpt"
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert url_cache_path("https://example.org:8443/a/b/eva.pth") == tmp_path / "mine/urls/example.org_8443/a/b/eva.pth"
    one, two = url_cache_path("https://h/uc?id=1"), url_cache_path("https://h/uc?id=2")
    assert one != two and one.parent == two.parent
    monkeypatch.delenv("MINIGPT_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "minigpt"


# ---- URLs ------------------------------------------------------------------------------------------
def test_a_url_is_fetched_once_recorded_and_found_offline(local_hub, monkeypatch):
    local_hub.files["ann/train.json"] = b'[{"image": "a.jpg"}]'
    url = local_hub.file_url("ann/train.json")
    path = download_url(url)
    assert path == url_cache_path(url) and path.read_bytes() == b'[{"image": "a.jpg"}]'
    record = path.with_name("train.json.sha256").read_text()
    assert record.split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert download_url(url) == path and local_hub.asked("/files/ann/train.json") == 1  # the cache answers
    go_offline(monkeypatch, local_hub)
    assert download_url(url) == path
    assert resolve_source(url, "datasets.x.build_info.ann_path") == path


def test_a_cut_transfer_resumes_with_a_range_request(local_hub):
    local_hub.files["eva.pth"] = PAYLOAD
    local_hub.cut_transfers = 1
    path = download_url(local_hub.file_url("eva.pth"))
    assert path.read_bytes() == PAYLOAD
    assert local_hub.asked("/files/eva.pth") == 2
    assert local_hub.ranges == [("/files/eva.pth", f"bytes={len(PAYLOAD) // 2}-")]  # the second asked for the rest
    assert not path.with_name("eva.pth.part").exists()


def test_a_part_file_never_passes_for_the_file(local_hub, monkeypatch):
    local_hub.files["eva.pth"] = PAYLOAD
    url = local_hub.file_url("eva.pth")
    local_hub.cut_transfers = ATTEMPTS  # every attempt of this call is cut
    with pytest.raises(FetchError, match=r"download of .*eva.pth stopped at \d+ bytes .*run again to resume"):
        download_url(url)
    part = url_cache_path(url).with_name("eva.pth.part")
    assert not url_cache_path(url).exists() and 0 < part.stat().st_size < len(PAYLOAD)
    monkeypatch.setenv("MINIGPT_OFFLINE", "1")
    with pytest.raises(FetchError, match="is not on this machine and downloads are off"):
        resolve_source(url, "model.vit_weights")
    monkeypatch.delenv("MINIGPT_OFFLINE")
    resumed_from = part.stat().st_size
    assert download_url(url).read_bytes() == PAYLOAD
    assert local_hub.ranges[-1] == ("/files/eva.pth", f"bytes={resumed_from}-")


def test_a_server_that_ignores_the_range_gets_a_fresh_download(local_hub):
    local_hub.files["eva.pth"] = PAYLOAD
    url = local_hub.file_url("eva.pth")
    part = url_cache_path(url).with_name("eva.pth.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not the start of the file")  # appended to, this would corrupt the download
    local_hub.ignore_range = True
    assert download_url(url).read_bytes() == PAYLOAD
    assert local_hub.ranges == [("/files/eva.pth", "bytes=25-")]


def test_a_sha256_mismatch_is_refused_and_nothing_is_left(local_hub):
    local_hub.files["eva.pth"] = PAYLOAD
    url = local_hub.file_url("eva.pth")
    actual = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(FetchError) as error:
        download_url(url, sha256="0" * 64)
    assert url in str(error.value) and "0" * 64 in str(error.value) and actual in str(error.value)
    def left() -> list[str]:  # what the cache holds for it: no file, .part or .sha256 (a lock may stay)
        return sorted(p.name for p in url_cache_path(url).parent.iterdir() if not p.name.endswith(".lock"))

    assert left() == []
    with pytest.raises(FetchError, match=f"expected 5 bytes, the server sends {len(PAYLOAD)}"):
        download_url(url, size=5)
    assert left() == []
    assert download_url(url, sha256=actual, size=len(PAYLOAD)).read_bytes() == PAYLOAD
    with pytest.raises(FetchError, match=f"expected 5 bytes, the file has {len(PAYLOAD)}"):  # also when cached
        download_url(url, size=5)
    assert left() == []


def test_a_file_unchanged_since_its_record_is_not_hashed_again(local_hub, monkeypatch):
    """Hashing a 2 GB file at every config load is start-up time: only a file written after its record
    (the test below) is hashed again."""
    import minigpt.common.fetch as fetch

    local_hub.files["eva.pth"] = PAYLOAD
    url = local_hub.file_url("eva.pth")
    path = download_url(url)
    hashed = []
    monkeypatch.setattr(fetch, "file_sha256", lambda file: hashed.append(file) or hashlib.sha256(file.read_bytes()).hexdigest())
    assert download_url(url) == path and hashed == []
    later = path.with_name("eva.pth.sha256").stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))  # written after its record: checked again
    assert download_url(url) == path and hashed == [path]


def test_the_recorded_sha256_catches_a_file_changed_on_disk(local_hub):
    local_hub.files["eva.pth"] = PAYLOAD
    url = local_hub.file_url("eva.pth")
    path = download_url(url)
    changed = bytearray(PAYLOAD)
    changed[1000] ^= 0xFF  # one byte, same size
    path.write_bytes(bytes(changed))
    with pytest.raises(FetchError) as error:
        download_url(url)
    assert hashlib.sha256(PAYLOAD).hexdigest() in str(error.value)
    assert hashlib.sha256(bytes(changed)).hexdigest() in str(error.value) and not path.exists()
    assert download_url(url).read_bytes() == PAYLOAD and local_hub.asked("/files/eva.pth") == 2


def test_an_unreachable_or_missing_url_is_one_line(local_hub):
    with pytest.raises(FetchError, match=r"HTTP 404") as error:
        resolve_source(local_hub.file_url("absent.pth"), "model.vit_weights")
    assert str(error.value).startswith("model.vit_weights: ") and "\n" not in str(error.value)
    with pytest.raises(FetchError, match="cannot download http://127.0.0.1:9/eva.pth"):
        download_url("http://127.0.0.1:9/eva.pth")  # the discard port: nobody listens


# ---- the hub ---------------------------------------------------------------------------------------
def test_a_hub_folder_fetches_only_what_a_model_reads_and_is_found_offline(local_hub, llama_folder, monkeypatch):
    local_hub.add_repo("tiny-org/tiny-llama", llama_folder)
    folder = hub_folder("tiny-org/tiny-llama", allow_patterns=LLM_FOLDER)
    fetched = sorted(path.name for path in folder.iterdir())
    assert "model.safetensors" in fetched and "config.json" in fetched and "tokenizer.model" in fetched
    assert "pytorch_model.bin" not in fetched and "README.md" not in fetched  # no pickles beside safetensors
    assert load_file(folder / "model.safetensors").keys() == load_file(llama_folder / "model.safetensors").keys()
    assert resolve_model_folder("tiny-org/tiny-llama") == folder  # the old cache lookup finds the fetched snapshot
    asked = sum(local_hub.requests.values())
    assert hub_folder("tiny-org/tiny-llama", allow_patterns=LLM_FOLDER) == folder
    assert hub_file("tiny-org/tiny-llama", "config.json") == folder / "config.json"
    assert sum(local_hub.requests.values()) == asked  # cached: the hub is not asked again
    go_offline(monkeypatch, local_hub)
    assert hub_folder("tiny-org/tiny-llama", allow_patterns=LLM_FOLDER) == folder
    assert hub_file("tiny-org/tiny-llama", "config.json") == folder / "config.json"
    with pytest.raises(FetchError, match="downloads are off"):  # a file the folder was not fetched with
        hub_file("tiny-org/tiny-llama", "README.md")


def test_a_folder_whose_config_was_fetched_alone_is_completed(local_hub, llama_folder, monkeypatch):
    """A plan fetches an LLM's config.json alone; the snapshot folder it makes must not pass for the model."""
    local_hub.add_repo("tiny-org/tiny-llama", llama_folder)
    config = hub_file("tiny-org/tiny-llama", "config.json")
    folder = hub_folder("tiny-org/tiny-llama", allow_patterns=LLM_FOLDER)
    assert folder == config.parent and (folder / "model.safetensors").is_file() and (folder / "tokenizer.model").is_file()
    asked = sum(local_hub.requests.values())
    assert hub_folder("tiny-org/tiny-llama", allow_patterns=("*.json", "*.model")) == folder  # fewer files: cached
    assert sum(local_hub.requests.values()) == asked
    go_offline(monkeypatch, local_hub)
    assert hub_folder("tiny-org/tiny-llama", allow_patterns=LLM_FOLDER) == folder


def test_pickled_weights_are_fetched_when_a_repo_has_no_safetensors(local_hub):
    local_hub.add_repo("old-org/bin-only", {"config.json": b"{}", "pytorch_model.bin": b"weights", "notes.txt": b"x"})
    folder = hub_folder("old-org/bin-only", allow_patterns=LLM_FOLDER)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "pytorch_model.bin"]


@pytest.mark.parametrize("token, status", [(None, 401), ("hf_not_granted", 403)])
def test_a_gated_repo_says_how_to_get_access(local_hub, monkeypatch, token, status):
    local_hub.add_repo("meta-llama/Llama-2-7b-chat-hf", {"config.json": b"{}"}, gated=True)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    expected = ("model.llama_model: meta-llama/Llama-2-7b-chat-hf is gated: accept its licence at "
                "https://huggingface.co/meta-llama/Llama-2-7b-chat-hf and run `hf auth login` "
                "(or set HF_TOKEN)")
    with pytest.raises(FetchError) as error:
        resolve_source("meta-llama/Llama-2-7b-chat-hf", "model.llama_model", want="folder")
    assert str(error.value) == expected
    with pytest.raises(FetchError, match="is gated: accept its licence"):
        hub_file("meta-llama/Llama-2-7b-chat-hf", "config.json")
    assert local_hub.asked("/api/models/meta-llama/Llama-2-7b-chat-hf") >= 1
    assert local_hub.asked("/resolve/", "HEAD") >= 1 and set(local_hub.statuses) == {status}


def test_a_missing_repo_revision_or_file_is_named(local_hub):
    local_hub.add_repo("tiny-org/weights", {"eva.pth": b"w"})
    with pytest.raises(FetchError, match="path 'tiny-org/absent' does not exist, and on the Hugging Face hub: "
                                         "no repository tiny-org/absent"):
        resolve_source("tiny-org/absent", "model.llama_model", want="folder")
    with pytest.raises(FetchError, match="no file 'qformer.pth' of tiny-org/weights"):
        resolve_source("tiny-org/weights/qformer.pth", "model.q_former_model", want="any")
    with pytest.raises(FetchError, match="tiny-org/weights has no revision 'v9'"):
        resolve_source("tiny-org/weights@v9/eva.pth", "model.vit_weights", want="any")
    assert resolve_source("tiny-org/weights/eva.pth", "model.vit_weights", want="any").read_bytes() == b"w"


# ---- offline ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "MINIGPT_OFFLINE"])
def test_offline_a_missing_file_is_one_line_saying_how_to_fetch_it(local_hub, monkeypatch, variable):
    local_hub.add_repo("tiny-org/tiny-llama", {"config.json": b"{}"})
    local_hub.files["eva.pth"] = PAYLOAD
    url = local_hub.file_url("eva.pth")
    go_offline(monkeypatch, variable=variable)
    for value, setting, want in (("tiny-org/tiny-llama", "model.llama_model", "folder"),
                                 (url, "model.vit_weights", "any"),
                                 ("tiny-org/tiny-llama/config.json", "model.q_former_model", "any")):
        with pytest.raises(FetchError) as error:
            resolve_source(value, setting, want=want)
        assert str(error.value) == (f"{setting}: '{value}' is not on this machine and downloads are off "
                                    f"({variable}=1); fetch it with: minigpt download {value}")
    assert sum(local_hub.requests.values()) == 0
    monkeypatch.delenv(variable)
    with pytest.raises(FetchError, match=r"downloads are off \(this command only reads"):
        resolve_source(url, "model.vit_weights", fetch=False)  # fetch=False: the caches only, even online
    assert resolve_source(url, "model.vit_weights").read_bytes() == PAYLOAD
    assert resolve_source(url, "model.vit_weights", fetch=False).read_bytes() == PAYLOAD


def test_a_local_path_must_exist(tmp_path):
    (tmp_path / "eva.pth").write_bytes(b"w")
    assert resolve_source(str(tmp_path / "eva.pth"), "model.vit_weights") == tmp_path / "eva.pth"
    with pytest.raises(FetchError, match=f"model.vit_weights: path '{tmp_path}/none.pth' does not exist"):
        resolve_source(str(tmp_path / "none.pth"), "model.vit_weights")
    assert issubclass(FetchError, InputError)  # the command line prints it as one line and exits with 2


# ---- configs ---------------------------------------------------------------------------------------
def hub_options(hub, eva_url: str) -> list[str]:
    return ["model.llama_model=tiny-org/tiny-llama", "model.tokenizer=tiny-org/tiny-llama", "model.llama_config={}",
            "model.ckpt=null", f"model.vit_weights={eva_url}"]


def test_a_config_naming_hub_models_and_urls_loads_and_builds_from_local_paths(local_hub, llama_folder, eva_weights,
                                                                                monkeypatch):
    from minigpt.inference.loading import load_for_inference

    local_hub.add_repo("tiny-org/tiny-llama", llama_folder)
    local_hub.files["eva_vit_tiny.pth"] = eva_weights.read_bytes()
    options = hub_options(local_hub, local_hub.file_url("eva_vit_tiny.pth"))
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", options, for_training=False)
    for key in ("llama_model", "tokenizer", "vit_weights"):
        assert os.path.exists(config.model[key]) and "://" not in config.model[key], key
    assert config.model.vit_weights == str(url_cache_path(local_hub.file_url("eva_vit_tiny.pth")))
    model = load_for_inference(config, torch.device("cpu"))
    expected = torch.load(eva_weights)
    vision = model.visual_encoder.state_dict()
    assert all(torch.equal(vision[key], value) for key, value in expected.items())  # the served EVA weights
    llm, served = model.llama_model.state_dict(), load_file(llama_folder / "model.safetensors")
    assert torch.equal(llm["model.layers.0.mlp.up_proj.weight"], served["model.layers.0.mlp.up_proj.weight"])

    go_offline(monkeypatch, local_hub)  # later runs: the caches, no server
    again = load_config(REPO / "eval_configs/tiny_eval.yaml", options, for_training=False)
    assert (again.model.llama_model, again.model.vit_weights) == (config.model.llama_model, config.model.vit_weights)


def test_a_data_set_annotation_url_becomes_its_ann_path(local_hub, llama_folder, tmp_path):
    local_hub.add_repo("tiny-org/tiny-llama", llama_folder)
    records = [{"image": "a.jpg",
                "conversations": [{"from": "human", "value": "<image>Hi?"}, {"from": "gpt", "value": "Hi."}]}]
    local_hub.files["train.json"] = json.dumps(records).encode()
    (tmp_path / "images").mkdir()
    common = ["model.tokenizer=tiny-org/tiny-llama", "model.ckpt=null", f"run.output_dir={tmp_path}/out",
              f"datasets.sharegpt4v.build_info.image_path={tmp_path}/images"]
    url = local_hub.file_url("train.json")
    config = load_config(REPO / "train_configs/tiny_stage2.yaml", [*common, f"datasets.sharegpt4v.build_info.url={url}"])
    ann_path = config.datasets.sharegpt4v.build_info.ann_path  # (the tiny config's own, data/shapes/train.json, gave way)
    assert ann_path == str(url_cache_path(url)) and json.loads(open(ann_path).read()) == records
    direct = load_config(REPO / "train_configs/tiny_stage2.yaml", [*common, f"datasets.sharegpt4v.build_info.ann_path={url}"])
    assert direct.datasets.sharegpt4v.build_info.ann_path == ann_path and local_hub.asked("/files/train.json") == 1


def test_a_missing_local_path_is_named_before_anything_is_downloaded(local_hub, tmp_path):
    local_hub.files["eva_vit_tiny.pth"] = PAYLOAD
    options = [*hub_options(local_hub, local_hub.file_url("eva_vit_tiny.pth")), f"model.ckpt={tmp_path}/nowhere"]
    with pytest.raises(ConfigError) as error:
        load_config(REPO / "eval_configs/tiny_eval.yaml", options, for_training=False)
    assert (error.value.source, error.value.key) == ("--options", "model.ckpt") and "does not exist" in str(error.value)
    assert sum(local_hub.requests.values()) == 0


def test_a_fetch_that_fails_names_the_config_file_and_key(local_hub, tmp_path):
    path = tmp_path / "chat.yaml"
    path.write_text(f"model:\n  vit_weights: {local_hub.file_url('absent.pth')}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, [f"model.tokenizer={tmp_path}", "model.llama_config={hidden_size: 8}"], for_training=False)
    assert (error.value.source, error.value.key) == (str(path), "model.vit_weights") and "HTTP 404" in str(error.value)
