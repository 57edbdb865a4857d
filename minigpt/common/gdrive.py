"""Google Drive files: the released MiniGPT-4 and MiniGPT-v2 checkpoints are Drive links. Which file a
value names, and the address that serves its bytes.

A value names a Drive file as `gdrive://<file id>` or `gdrive://<file id>/<name>` (the name the cached copy
gets), or by the links Drive shows (`https://drive.google.com/file/d/<id>/view`, `.../uc?id=<id>`,
`.../open?id=<id>`). Drive answers the download of a large file with a page, "Google Drive can't scan this
file for viruses", whose form has to be submitted to get the file: gdown (the `drive` extra), maintained
as Drive changes that page, reads the form. The bytes themselves are then fetched by fetch.download_url,
resumed and checked as any URL is. MINIGPT_GDRIVE_URL stands in for https://drive.google.com (the tests
serve Drive's pages from 127.0.0.1).
"""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from minigpt.common.errors import FetchError, MissingExtraError
from minigpt.common.transfer import TIMEOUT_S

DRIVE_URL = "https://drive.google.com"
DRIVE_HOSTS = ("drive.google.com", "docs.google.com")
FILE_ID = re.compile(r"^[-\w]{10,}$")


@dataclass(frozen=True)
class DriveFile:
    file_id: str
    name: str | None = None  # what the cached copy is called (the file id when not given)


def drive_url() -> str:
    """Where Drive is: $MINIGPT_GDRIVE_URL, else https://drive.google.com (read at call time)."""
    return (os.environ.get("MINIGPT_GDRIVE_URL") or DRIVE_URL).rstrip("/")


def drive_file(value: str) -> DriveFile | None:
    """The Drive file `value` names, or None when it names none; a gdrive:// value that is not
    gdrive://<id>[/<name>] is refused."""
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme == "gdrive":
        file_id, _, name = (parts.netloc + parts.path).partition("/")
        if not FILE_ID.match(file_id) or name in (".", "..") or "/" in name:
            raise FetchError(f"'{value}': a Drive file is named gdrive://<file id> or gdrive://<file id>/<file name>")
        return DriveFile(file_id, name or None)
    if parts.scheme not in ("http", "https") or parts.hostname not in DRIVE_HOSTS:
        return None
    in_path = re.search(r"/d/([-\w]+)", parts.path)
    file_id = in_path[1] if in_path else urllib.parse.parse_qs(parts.query).get("id", [""])[0]
    if not FILE_ID.match(file_id):
        raise FetchError(f"'{value}': no Drive file id in this link (expected .../file/d/<id>/view or ...?id=<id>)")
    return DriveFile(file_id)


def view_link(file_id: str) -> str:
    return f"{DRIVE_URL}/file/d/{file_id}/view"


def download_link(file_id: str) -> str:
    """The address that serves the file's bytes: Drive's download address for a file small enough to come
    without a page, else the one the confirmation page's form submits to. Nothing of the file is read here."""
    try:
        from gdown.download import get_url_from_gdrive_confirmation
        from gdown.exceptions import FileURLRetrievalError
    except ImportError:
        raise MissingExtraError("a Google Drive download", "gdown", "drive") from None
    start = f"{drive_url()}/uc?export=download&id={file_id}"
    try:
        response = urllib.request.urlopen(start, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise FetchError(f"Google Drive file {file_id}: HTTP {error.code} {error.reason} ({start})") from None
    except urllib.error.URLError as error:
        raise FetchError(f"cannot reach Google Drive for file {file_id} ({start}): {error.reason}") from None
    with response:
        if response.headers.get_content_type() != "text/html":
            return response.url  # the file itself: fetched again from there by the resumable download
        page, page_url = response.read().decode("utf-8", "replace"), response.url
    try:
        return urllib.parse.urljoin(page_url, get_url_from_gdrive_confirmation(page))
    except FileURLRetrievalError as error:  # a quota page, a sign-in page, a file no longer shared
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FetchError(f"Google Drive does not serve file {file_id} now ({reason}); download it in a browser "
                         f"from {view_link(file_id)} and give its path instead") from None
