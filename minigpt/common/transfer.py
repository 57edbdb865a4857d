"""One HTTP download into a `.part` file, resumed where it stopped: a Range request from the end of what
the file holds, a fresh start when the server ignores the range or the part is not a prefix of the file.
fetch.download_url decides where the file goes and checks it; this module only moves bytes.
"""
from __future__ import annotations

import http.client
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from minigpt.common.errors import FetchError

CHUNK_BYTES = 1 << 20
ATTEMPTS = 3  # transfers cut short are resumed this many times within one call
TIMEOUT_S = 60


def transfer(url: str, part: Path, size: int | None, desc: str) -> None:
    """Fill `part` with the whole of `url`, resuming from what it holds; a transfer cut short is resumed
    up to ATTEMPTS times, and what it got is kept for the next call to resume."""
    problem = "no attempt made"
    for _ in range(ATTEMPTS):
        try:
            total = transfer_once(url, part, desc)
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as error:
            problem = f"{type(error).__name__}: {error}"
            continue
        if size is not None and total is not None and total != size:
            part.unlink()
            raise FetchError(f"{url}: expected {size} bytes, the server sends {total}")
        got = part.stat().st_size
        if total is None or got == total:
            if size is not None and got != size:
                part.unlink()
                raise FetchError(f"{url}: expected {size} bytes, got {got}")
            return
        problem = f"the connection closed after {got} of {total} bytes"
    have = part.stat().st_size if part.exists() else 0
    raise FetchError(f"download of {url} stopped at {have} bytes ({problem}); run again to resume from there")


def transfer_once(url: str, part: Path, desc: str) -> int | None:
    """One request: from the end of `part` (a Range request) or from the start when the server ignores
    the range; -> the file's whole size when the server says it."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the .part is not a prefix of this file: start again
            part.unlink()
            return transfer_once(url, part, desc)
        raise FetchError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise FetchError(f"cannot download {url}: {error.reason}") from None
    with response:
        start, total = content_span(response)
        if start not in (0, offset):  # a part we did not ask for: start again
            part.unlink()
            raise ConnectionError(f"the server sent bytes from {start}, not from {offset}")
        mode = "ab" if start else "wb"  # 200 to a Range request: the whole file, from the start
        with open(part, mode) as out, tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=desc) as bar:
            for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(block)
                bar.update(len(block))
    return total


def content_span(response) -> tuple[int, int | None]:
    """-> (where this response's body starts in the file, the file's whole size or None): a 206 says
    both in Content-Range, a 200 is the whole file of Content-Length bytes."""
    if response.status != 206:
        length = response.headers.get("Content-Length")
        return 0, int(length) if length else None
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    if not match:
        raise ConnectionError("a partial answer without a readable Content-Range")
    return int(match[1]), int(match[2]) if match[2] != "*" else None
