"""A local stand-in for the Hugging Face hub and for a plain file server, so that downloads are tested
without the internet: a ThreadingHTTPServer on 127.0.0.1 (a free port), started by the `local_hub`
fixture, which also points HF_ENDPOINT, HF_HOME and MINIGPT_CACHE at it and at tmp_path.

It plays as much of the hub as huggingface_hub's hf_hub_download and snapshot_download use:
  GET  /api/models/<repo>[/revision/<rev>]   repository info (sha, siblings)
  GET  /api/models/<repo>/tree/<rev>         the file listing snapshot_download reads
  HEAD/GET /<repo>/resolve/<rev>/<file>      a file, with ETag, X-Repo-Commit, Content-Length and Range
with the hub's error codes (X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo: 401
without a token, 403 with one). Plain files are served under /files/<name>. `sharded_weights` writes a
safetensors index and its shards, as a sharded hub repository holds them.

It also plays Google Drive's download flow (MINIGPT_GDRIVE_URL points here), as Drive runs it today:
  GET /uc?export=download&id=<id>            303 to /download?id=<id>&export=download
  GET /download?id=<id>&export=download      a file above `drive_scan_limit` bytes: the HTML page "Google
                                             Drive can't scan this file for viruses", whose one-line form
                                             carries id, export, confirm=t and a fresh uuid; a smaller one:
                                             the file itself
  GET /download?...&confirm=t&uuid=<uuid>    the file (Range requests too), for a uuid a page gave out
An id in `drive_refused` gets Drive's error page ("Too many users have viewed or downloaded this file").

Switches for the tests: `cut_transfers` (that many next transfers stop halfway through the body, as a
dropped connection does), `ignore_range` (answer a Range request with the whole file, 200), and
`requests` (how often each "METHOD path" was asked), `ranges` (each Range header received) and
`statuses` (each status answered).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MINIGPT_OFFLINE")


@dataclass
class HubRepo:
    files: dict[str, bytes]
    gated: bool = False
    commit: str = ""

    def __post_init__(self) -> None:
        listing = json.dumps(sorted((name, hashlib.sha256(data).hexdigest()) for name, data in self.files.items()))
        self.commit = self.commit or hashlib.sha1(listing.encode()).hexdigest()  # 40 hex digits, as git's


@dataclass
class LocalHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    drive_files: dict[str, bytes] = field(default_factory=dict)
    drive_scan_limit: int = 1000  # bytes: larger Drive files come after the confirmation page
    drive_refused: set = field(default_factory=set)
    drive_uuids: list = field(default_factory=list)  # each confirmation page's uuid, in order
    cut_transfers: int = 0
    ignore_range: bool = False
    requests: Counter = field(default_factory=Counter)
    ranges: list = field(default_factory=list)
    statuses: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def file_url(self, name: str) -> str:
        return f"{self.url}/files/{name}"

    def add_repo(self, repo_id: str, folder_or_files: Path | dict[str, bytes], gated: bool = False) -> HubRepo:
        """A repository serving a folder's files (or {name: bytes})."""
        files = folder_or_files if isinstance(folder_or_files, dict) else {
            str(path.relative_to(folder_or_files)): path.read_bytes()
            for path in sorted(folder_or_files.rglob("*")) if path.is_file()}
        self.repos[repo_id] = HubRepo(files, gated)
        return self.repos[repo_id]

    def asked(self, fragment: str, method: str = "GET") -> int:
        """How many requests of `method` had `fragment` in their path."""
        return sum(count for key, count in self.requests.items() if key.startswith(method + " ") and fragment in key)

    def start(self) -> LocalHub:
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread = None


def _handler_for(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def send_response(self, code: int, message: str | None = None) -> None:
            hub.statuses.append(code)
            super().send_response(code, message)

        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            path = self.path.split("?")[0]
            hub.requests[f"{self.command} {path}"] += 1
            if self.headers.get("Range"):
                hub.ranges.append((path, self.headers["Range"]))
            if path in ("/uc", "/download"):
                return self.drive(path, urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query), body)
            if path.startswith("/files/"):
                data = hub.files.get(path.removeprefix("/files/"))
                return self.send_data(data, {}, body) if data is not None else self.error(404, None)
            api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+)|/tree/([^/]+))?", path)
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            match = api or resolve
            if match is None:
                return self.error(404, None)
            repo = self.repo(match[1], (match[2] or match[3] or "main") if api else match[2])
            if repo is None:
                return
            if api and match[3]:
                return self.send_json([{"type": "file", "path": name, "size": len(data),
                                        "oid": hashlib.sha1(data).hexdigest()} for name, data in repo.files.items()])
            if api:
                return self.send_json({"id": match[1], "sha": repo.commit, "private": False, "gated": repo.gated,
                                       "siblings": [{"rfilename": name} for name in repo.files]})
            data = repo.files.get(match[3])
            if data is None:
                return self.error(404, "EntryNotFound", {"X-Repo-Commit": repo.commit})
            self.send_data(data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": repo.commit}, body)

        def drive(self, path: str, query: dict, body: bool) -> None:
            file_id = query.get("id", [""])[0]
            data = hub.drive_files.get(file_id)
            if data is None:
                return self.error(404, None)
            if path == "/uc":
                return self.error(303, None, {"Location": f"{hub.url}/download?id={file_id}&export=download"})
            if file_id in hub.drive_refused:
                return self.send_page(DRIVE_QUOTA_PAGE)
            confirmed = query.get("confirm") == ["t"] and query.get("uuid", [""])[0] in hub.drive_uuids
            if len(data) > hub.drive_scan_limit and not confirmed:
                hub.drive_uuids.append(str(uuid.uuid4()))
                return self.send_page(DRIVE_SCAN_PAGE.format(url=hub.url, id=file_id, uuid=hub.drive_uuids[-1]))
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Disposition": f'attachment; filename="{file_id}.pth"'}
            self.send_data(data, headers, body)

        def send_page(self, page: str) -> None:
            data = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def repo(self, repo_id: str, revision: str) -> HubRepo | None:
            """The repository, or None after answering with the hub's error."""
            repo = hub.repos.get(repo_id)
            if repo is None:
                self.error(404, "RepoNotFound")
            elif repo.gated:  # without a token the hub answers 401, with one not yet granted access 403
                self.error(403 if self.headers.get("Authorization") else 401, "GatedRepo",
                           {"X-Error-Message": f"Access to model {repo_id} is restricted."})
            elif revision not in ("main", repo.commit):
                self.error(404, "RevisionNotFound")
            else:
                return repo
            return None

        def error(self, status: int, code: str | None, headers: dict | None = None) -> None:
            self.send_response(status)
            for name, value in {**({"X-Error-Code": code} if code else {}), **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def send_json(self, payload) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def send_data(self, data: bytes, headers: dict, body: bool) -> None:
            """The file, or from the asked offset (206) unless ignore_range; a cut transfer promises the whole
            length and sends half of it."""
            start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
            if hub.ignore_range or not self.headers.get("Range"):
                start = 0
            if start >= len(data) > 0:
                return self.error(416, None, {"Content-Range": f"bytes */{len(data)}"})
            self.send_response(206 if start else 200)
            for name, value in {**headers, "Accept-Ranges": "bytes", "Content-Length": str(len(data) - start)}.items():
                self.send_header(name, value)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            if hub.cut_transfers > 0:
                hub.cut_transfers -= 1
                self.wfile.write(data[start:start + (len(data) - start) // 2])
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    return Handler


# Drive's pages as it serves them (2024-): the form on one line, its hidden inputs what the download needs.
DRIVE_SCAN_PAGE = (
    '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n'
    '<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can\'t scan this file for '
    'viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">checkpoint.pth'
    '</a> (1.1G)</span> is too large for Google to scan for viruses. Would you still like to download this file?</p>'
    '<form id="download-form" action="{url}/download" method="get"><input type="submit" id="uc-download-link" '
    'class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/><input type="hidden" name="id" '
    'value="{id}"><input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">'
    '<input type="hidden" name="uuid" value="{uuid}"></form></div></div>\n</body></html>\n')
DRIVE_QUOTA_PAGE = (
    '<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>\n'
    '<p class="uc-error-caption">Sorry, you can\'t view or download this file at this time.</p>\n'
    '<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try accessing '
    'the file again later.</p>\n</body></html>\n')


def sharded_weights(shards: list[dict], index_name: str = "model.safetensors.index.json") -> dict[str, bytes]:
    """{file name: bytes} of safetensors shards holding `shards` (one dict of tensors each) and the index
    mapping every tensor to its shard, as save_pretrained writes a sharded model."""
    from safetensors.torch import save

    names = [f"model-{number:05d}-of-{len(shards):05d}.safetensors" for number in range(1, len(shards) + 1)]
    files = {name: save(tensors) for name, tensors in zip(names, shards)}
    weight_map = {key: name for name, tensors in zip(names, shards) for key in tensors}
    files[index_name] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A started LocalHub, with HF_ENDPOINT and MINIGPT_GDRIVE_URL pointing at it, the caches in tmp_path
    (MINIGPT_CACHE, HF_HOME), no token and downloads on; stopped at the end."""
    import huggingface_hub.constants

    hub = LocalHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("MINIGPT_GDRIVE_URL", hub.url)
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in (*OFFLINE_VARIABLES, "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at its import
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    yield hub
    hub.stop()


def go_offline(monkeypatch, hub: LocalHub | None = None, variable: str = "HF_HUB_OFFLINE") -> None:
    """Downloads off (and the server stopped, when given): only the caches answer now."""
    if hub is not None:
        hub.stop()
    monkeypatch.setenv(variable, "1")


def default_weight_urls() -> list[str]:
    """The URLs the shipped model configs fetch their weights from when a config keeps the defaults."""
    from omegaconf import OmegaConf

    from minigpt.common.paths import PACKAGE_ROOT

    urls = []
    for path in sorted((PACKAGE_ROOT / "defaults" / "models").glob("*.yaml")):
        model = OmegaConf.load(path).model
        urls += [model[key] for key in ("vit_weights", "q_former_model") if "://" in str(model.get(key) or "")]
    return sorted(set(urls))


@pytest.fixture
def default_weights_cached(tmp_path, monkeypatch):
    """Empty stand-ins for the default weights (EVA ViT-g, the BLIP-2 Q-Former) in a cache in tmp_path,
    as if fetched before: a config that keeps the defaults loads without the network. Nothing may build
    a model from them."""
    from minigpt.common.fetch import url_cache_path

    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "minigpt-cache"))
    for url in default_weight_urls():
        path = url_cache_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
