"""Getting a named file onto local disk: a weights or data setting may name a local path, an http(s) URL,
a Google Drive file (gdrive.py) or a file or folder on the Hugging Face hub, and whatever it names ends up
as a local path.

URLs go into our own cache (`cache_root()/urls/<host>/<path>`): written to `<file>.part`, renamed only
when complete (so a cut transfer never passes for the file), resumed with an HTTP Range request, and
checked against a sha256, the one given or the one recorded beside the file at its first fetch
(`<file>.sha256`), so that a file changed on disk is caught before a model loads it (one not written
since its record is not hashed again). Drive files take the same path into `cache_root()/gdrive/<file id>/`. Hub files and folders go through huggingface_hub, whose
cache (HF_HUB_CACHE / HF_HOME) transformers shares; of a sharded repository whose weights are only partly
used (a BLIP-2 repository's ViT and Q-Former) only the shards holding those weights are fetched.

Downloads are off when HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or MINIGPT_OFFLINE is set: then only what
the caches hold is found, and a missing file is one line saying how to fetch it. Every variable is read
at call time, not at import (huggingface_hub reads its own at import, so we pass them to it each call).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from minigpt.common import gdrive
from minigpt.common.errors import FetchError
from minigpt.common.paths import hub_cache_dir, resolve_path
from minigpt.common.transfer import ATTEMPTS, CHUNK_BYTES, transfer  # noqa: F401  (ATTEMPTS: the tests read it)

OFFLINE_VARIABLES = ("MINIGPT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_WEBSITE = "https://huggingface.co"
# owner/name, then @revision, then /a/file/inside. No braces, globs or spaces: shard patterns are paths.
HUB_ID = re.compile(r"^(?P<repo_id>[A-Za-z0-9][\w.-]*/[\w.-]+)"  # paths.HUB_NAME
                    r"(?:@(?P<revision>[\w.-]+))?(?:/(?P<filename>[^\s{}*?\[\]]+))?$")
WANTS = ("file", "folder", "any")
SAFETENSORS_INDEX = "model.safetensors.index.json"
# What a hub folder is fetched with: only the files we read.
LLM_FOLDER = ("*.json", "*.model", "*.safetensors", "*.bin")  # config, tokenizer, weights (.bin: without safetensors)
VISION_TOWER_FOLDER = ("*.json", "*.safetensors", "*.bin")  # config, preprocessor_config, weights
TOKENIZER_FOLDER, WEIGHTS_FOLDER = ("*.json", "*.model"), ("*.json", "*.safetensors")  # (weights: BLIP-2, peft, ckpt)


class NotCachedError(FetchError):
    """Downloads are off and the cache does not hold it (resolve_source turns this into how to fetch it)."""


class NoSuchRepoError(FetchError):
    """The hub knows no repository by that name, or could not be asked: the value may be a mistyped path."""


def cache_root() -> Path:
    """Where downloaded URLs go: $MINIGPT_CACHE, else $XDG_CACHE_HOME/minigpt, else ~/.cache/minigpt."""
    if os.environ.get("MINIGPT_CACHE"):
        return Path(os.path.expanduser(os.environ["MINIGPT_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expanduser(xdg)) / "minigpt"


def downloads_off(local_only: bool = False) -> str | None:
    """Why nothing may be downloaded now (the variable that says so), or None when downloads are on."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]}"
    return "this command only reads what is on this machine" if local_only else None


@dataclass(frozen=True)
class Source:
    """What a setting's value names: a local `path`, an http(s) `url`, a Google `drive` file (its id, and
    the name its copy gets), or a `hub` repository (with an optional revision, and the file inside it when
    one is named)."""

    kind: str  # "path" | "url" | "drive" | "hub"
    value: str
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None
    file_id: str | None = None  # drive


def parse_source(value: str, want: str | None = None) -> Source:
    """Read a setting's value. What exists on this machine is a path, even if it looks like `org/name`;
    `gdrive://<id>[/<name>]` and Drive's own links are a Drive file; `http(s)://...` is a URL; `org/name`,
    `org/name@rev`, `org/name/sub/file.pth`, `org/name@rev/file.pth` name the hub. With `want`, a hub
    reading that cannot be what the setting takes stays a path: a folder setting takes `org/name[@rev]`,
    a file setting a file inside one (`data/train.json` is then a relative path, not the repository
    data/train.json)."""
    text = str(value).strip()
    drive = gdrive.drive_file(text)
    if drive is not None:
        return Source("drive", text, filename=drive.name, file_id=drive.file_id)
    if "://" in text:
        if urllib.parse.urlsplit(text).scheme not in ("http", "https"):
            raise FetchError(f"'{text}': only http:// and https:// URLs (and gdrive://<file id>) are fetched")
        return Source("url", text)
    match = HUB_ID.match(text)
    if match is None or text.startswith((".", "~")) or resolve_path(text).exists():
        return Source("path", text)
    source = Source("hub", text, match["repo_id"], match["revision"], match["filename"])
    if (want == "folder" and source.filename) or (want == "file" and not source.filename):
        return Source("path", text)
    return source


# ---- URLs ------------------------------------------------------------------------------------------
def url_cache_path(url: str) -> Path:
    """cache_root()/urls/<host>/<path>; a query string gets a short digest of its own in the name (two
    `...?id=` links are two files)."""
    parts = urllib.parse.urlsplit(url)
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/") if s not in ("", ".", "..")]
    name = segments.pop() if segments else "index"
    if parts.query:
        name += "-" + hashlib.sha256(parts.query.encode()).hexdigest()[:10]
    host = parts.netloc.rsplit("@", 1)[-1].replace(":", "_")  # (no user:password@ in a folder name)
    return cache_root() / "urls" / host / Path(*segments) / name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_digest(path: Path) -> str | None:
    record = _digest_record(path)
    words = record.read_text().split() if record.is_file() else []
    return words[0] if words else None


def _record_digest(path: Path, digest: str) -> None:
    _digest_record(path).write_text(f"{digest}  {path.name}\n")  # as sha256sum writes it: `sha256sum -c` reads it


def _refuse(path: Path, url: str, problem: str) -> FetchError:
    """Remove a file that is not what `url` serves (and its record), so that no later run loads it."""
    path.unlink(missing_ok=True)
    _digest_record(path).unlink(missing_ok=True)
    return FetchError(f"{url}: {problem}; removed {path} (run again to download it afresh)")


def _verify(path: Path, url: str, sha256: str | None, size: int | None) -> Path:
    """A complete file checked against the expected size and sha256 (the given one, else the one recorded
    at its first fetch); a file without either gets its digest recorded now."""
    if size is not None and path.stat().st_size != size:
        raise _refuse(path, url, f"expected {size} bytes, the file has {path.stat().st_size}")
    expected = sha256 or _recorded_digest(path)
    record = _digest_record(path)
    written_since = not record.is_file() or path.stat().st_mtime_ns >= record.stat().st_mtime_ns
    if expected is not None and expected.lower() == _recorded_digest(path) and not written_since:
        return path  # checked at its fetch, not changed on disk since: no 2 GB hash at every config load
    actual = file_sha256(path)
    if expected is not None and actual != expected.lower():
        raise _refuse(path, url, f"sha256 mismatch: expected {expected}, got {actual}")
    if _recorded_digest(path) != actual:
        _record_digest(path, actual)
    return path


def download_url(url: str, dest: Path | None = None, *, sha256: str | None = None, size: int | None = None,
                 desc: str | None = None, local_only: bool = False) -> Path:
    """`url` as a local file (by default under cache_root()/urls/), fetched once and verified at every
    use. `local_only`, or HF_HUB_OFFLINE / MINIGPT_OFFLINE: the cached file or NotCachedError. A lock
    beside the file makes ranks that start together download it once."""
    dest = Path(dest) if dest is not None else url_cache_path(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if dest.is_file():
            return _verify(dest, url, sha256, size)
        reason = downloads_off(local_only)
        if reason:
            raise NotCachedError(f"{url} is not in the cache ({dest}) and downloads are off ({reason})")
        part = dest.with_name(dest.name + ".part")
        transfer(url, part, size, desc or dest.name)
        actual = file_sha256(part)
        if sha256 is not None and actual != sha256.lower():
            part.unlink()
            raise FetchError(f"{url}: sha256 mismatch: expected {sha256}, got {actual}; the download was removed")
        os.replace(part, dest)  # complete and checked: only now does it carry the file's name
        _record_digest(dest, actual)
        return dest


def drive_cache_path(file_id: str, name: str | None = None) -> Path:
    """cache_root()/gdrive/<file id>/<name> (the name defaults to the id): known before any request, so
    that the cached copy is found offline."""
    return cache_root() / "gdrive" / file_id / (name or file_id)


def download_drive_file(file_id: str, name: str | None = None, *, sha256: str | None = None,
                        size: int | None = None, local_only: bool = False) -> Path:
    """A Google Drive file as a local file, fetched once (through Drive's confirmation page when it has
    one) and verified at every use as a URL is; Drive is asked nothing while the cache holds it."""
    dest = drive_cache_path(file_id, name)
    link = f"gdrive://{file_id}"
    if not dest.is_file() and downloads_off(local_only) is None:
        link = gdrive.download_link(file_id)
    return download_url(link, dest, sha256=sha256, size=size, desc=dest.name, local_only=local_only)


# ---- the Hugging Face hub --------------------------------------------------------------------------
def _hub_options(local_only: bool) -> dict:
    """What huggingface_hub read at its import, read now: where the cache and the hub are, and offline."""
    return {"cache_dir": hub_cache_dir(), "endpoint": os.environ.get("HF_ENDPOINT") or None,
            "local_files_only": downloads_off(local_only) is not None}


def hub_file(repo_id: str, filename: str, revision: str | None = None, *, local_only: bool = False) -> Path:
    """One file of a hub repository: the cached copy when there is one (no request is made), else
    downloaded into the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    def get(cached_only: bool) -> Path:
        with _hub_errors(repo_id, revision, f"'{filename}' of {repo_id}", cached_only):
            return Path(hf_hub_download(repo_id, filename, revision=revision, **_hub_options(cached_only)))

    return _cache_first(get, local_only)


def hub_folder(repo_id: str, revision: str | None = None, allow_patterns: Sequence[str] | None = None, *,
               local_only: bool = False) -> Path:
    """A hub repository's snapshot folder holding the files `allow_patterns` match (all by default): the
    cached one when it holds them all, else downloaded. Where the patterns take both `*.safetensors` and
    `*.bin`, the pickled .bin copies come only when the repository has no safetensors: most hold both, and
    the .bin copy would double the download."""
    patterns = list(allow_patterns) if allow_patterns else None
    prefer_safetensors = bool(patterns) and "*.bin" in patterns and "*.safetensors" in patterns
    first = [p for p in patterns if p != "*.bin"] if prefer_safetensors else patterns

    def get(cached_only: bool) -> Path:
        folder = _snapshot(repo_id, revision, first, cached_only)
        if prefer_safetensors and not any(folder.rglob("*.safetensors")):
            folder = _snapshot(repo_id, revision, patterns, cached_only)
        if not cached_only:
            _record_snapshot(folder, patterns)
        elif downloads_off(local_only) is None and not _snapshot_complete(folder, patterns):
            raise NotCachedError(f"{repo_id}: the cached snapshot was not fetched with {patterns or 'every file'}")
        return folder

    return _cache_first(get, local_only)


def _snapshot_record(folder: Path) -> Path:
    """Where the patterns a hub snapshot was completed with are noted. The hub's cache cannot say offline
    whether a snapshot holds every file the patterns match (a file fetched alone, a plan's config.json,
    makes the folder), so a snapshot counts as cached for patterns it was completed with; offline, where
    nothing better can be had, for any."""
    return cache_root() / "hub" / folder.parent.parent.name / f"{folder.name}.json"


def _recorded_patterns(folder: Path) -> list[list[str]]:
    record = _snapshot_record(folder)
    return json.loads(record.read_text()) if record.is_file() else []


def _record_snapshot(folder: Path, patterns: list[str] | None) -> None:
    done, entry = _recorded_patterns(folder), sorted(patterns or ["*"])
    if entry not in done:
        record = _snapshot_record(folder)
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = record.with_name(f"{record.name}.{os.getpid()}")
        partial.write_text(json.dumps([*done, entry]))
        os.replace(partial, record)  # whole or not at all, whichever rank writes it


def _snapshot_complete(folder: Path, patterns: list[str] | None) -> bool:
    wanted = set(patterns or ["*"])
    return any("*" in entry or wanted <= set(entry) for entry in _recorded_patterns(folder))


def hub_weights(repo_id: str, revision: str | None, prefixes: Sequence[str], *, local_only: bool = False) -> Path:
    """A transformers folder holding only the weight shards with tensors whose names start with one of
    `prefixes` (of a BLIP-2 repository, the ViT's and the Q-Former's shards, not its language model's,
    which are most of it): its *.json first, then the shards its safetensors index maps those tensors to.
    Without an index (one weights file), every *.safetensors."""
    folder = hub_folder(repo_id, revision, ["*.json"], local_only=local_only)
    index = folder / SAFETENSORS_INDEX
    shards = shards_holding(index, prefixes) if index.is_file() else ["*.safetensors"]
    return hub_folder(repo_id, revision, ["*.json", *shards], local_only=local_only)


def shards_holding(index: Path, prefixes: Sequence[str]) -> list[str]:
    """The shard files a safetensors index maps a tensor named with one of `prefixes` to."""
    weight_map = json.loads(index.read_text())["weight_map"]
    return sorted({shard for name, shard in weight_map.items() if name.startswith(tuple(prefixes))})


def _cache_first(get: Callable[[bool], Path], local_only: bool) -> Path:
    """`get(cached_only=True)`, and only when the cache lacks it (and downloads are on) `get(False)`: a
    start-up with everything cached asks the hub nothing. (A branch that moved on the hub is therefore not
    followed; pin a revision, org/name@<commit>, to choose one.)"""
    try:
        return get(True)
    except NotCachedError:
        if downloads_off(local_only):
            raise
    return get(False)


def _snapshot(repo_id: str, revision: str | None, patterns: list[str] | None, cached_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    with _hub_errors(repo_id, revision, repo_id, cached_only):
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, **_hub_options(cached_only)))


def _login_hint(repo_id: str, what: str) -> str:
    return (f"{repo_id} is {what}: accept its licence at {HUB_WEBSITE}/{repo_id} and run `hf auth login` "
            "(or set HF_TOKEN)")


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, what: str, cached_only: bool) -> Iterator[None]:
    """huggingface_hub's errors (pages of advice) as one line each."""
    from huggingface_hub import errors

    endpoint = os.environ.get("HF_ENDPOINT") or HUB_WEBSITE
    try:
        yield
    except errors.GatedRepoError:
        raise FetchError(_login_hint(repo_id, "gated")) from None
    except errors.RepositoryNotFoundError as error:
        if error.response is not None and error.response.status_code in (401, 403):  # how the hub hides private repos
            raise NoSuchRepoError(_login_hint(repo_id, "gated or private (or not on the hub)")) from None
        raise NoSuchRepoError(f"no repository {repo_id} on the Hugging Face hub ({endpoint})") from None
    except errors.RevisionNotFoundError:
        raise FetchError(f"{repo_id} has no revision '{revision}'") from None
    except errors.RemoteEntryNotFoundError:
        raise FetchError(f"no file {what} on the Hugging Face hub ({endpoint})") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as error:
        reason = downloads_off(cached_only)
        if reason:
            raise NotCachedError(f"{what} is not in the Hugging Face cache ({hub_cache_dir() or 'default'}) "
                                 f"and downloads are off ({reason})") from None
        cause = error.__cause__ or error
        raise NoSuchRepoError(f"cannot fetch {what} from {endpoint}, and the Hugging Face cache does not hold it "
                              f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})") from None
    except errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise FetchError(_login_hint(repo_id, "gated or private")) from None
        raise FetchError(f"cannot fetch {what} from {endpoint}: HTTP {status}") from None


# ---- settings --------------------------------------------------------------------------------------
def resolve_source(value: str, setting: str, *, want: str = "file", allow_patterns: Sequence[str] | None = None,
                   weight_prefixes: Sequence[str] | None = None, fetch: bool = True) -> Path:
    """The local path a setting's value names, fetched when it is a URL, on Drive or on the hub and not
    cached yet. `want`: "file", "folder" (a hub repository: its snapshot, `allow_patterns` files only) or
    "any" (a repository's folder, or the file named inside it). `weight_prefixes`: of a sharded hub
    folder, only the shards holding those tensors. `fetch=False` only looks in the caches. Errors are
    FetchError naming the setting."""
    if want not in WANTS:
        raise ValueError(f"want must be one of {WANTS}, got {want!r}")
    try:
        source = parse_source(value, want)
    except FetchError as error:
        raise FetchError(error.problem, setting) from None
    try:
        return fetch_source(source, patterns=allow_patterns, prefixes=weight_prefixes, local_only=not fetch)
    except NotCachedError:
        how = f"downloads are off ({downloads_off(not fetch)}); fetch it with: minigpt download {value}"
        raise NotCachedError(f"'{value}' is not on this machine and {how}", setting) from None
    except NoSuchRepoError as error:  # it may have been meant as a relative path: say both
        raise NoSuchRepoError(f"path '{value}' does not exist, and on the Hugging Face hub: {error.problem}",
                              setting) from None
    except FetchError as error:
        raise FetchError(error.problem, setting) from None


def fetch_source(source: Source, *, patterns: Sequence[str] | None = None, prefixes: Sequence[str] | None = None,
                 sha256: str | None = None, local_only: bool = False) -> Path:
    """The local path of what `source` names: the cached copy, else fetched (unless `local_only` or
    downloads are off: then NotCachedError). `patterns` and `prefixes` choose a hub folder's files
    (hub_folder, hub_weights); `sha256` is what a URL's or a Drive file's bytes must hash to."""
    if source.kind == "url":
        return download_url(source.value, sha256=sha256, local_only=local_only)
    if source.kind == "drive":
        return download_drive_file(source.file_id, source.filename, sha256=sha256, local_only=local_only)
    if source.kind == "hub" and source.filename:
        return hub_file(source.repo_id, source.filename, source.revision, local_only=local_only)
    if source.kind == "hub" and prefixes:
        return hub_weights(source.repo_id, source.revision, prefixes, local_only=local_only)
    if source.kind == "hub":
        return hub_folder(source.repo_id, source.revision, patterns, local_only=local_only)
    path = resolve_path(source.value)
    if not path.exists():
        raise FetchError(f"path '{source.value}' does not exist")
    return path
