"""Images named by an http(s) URL in a chat request, fetched by the server within a size and a time limit.

A client such as lmms-eval or an agent framework sends `image_url: {url: "https://..."}` as it would to
OpenAI. The server fetches the image itself, reading at most `max_bytes` (the body is read in chunks, so
a server that lies about or omits Content-Length is cut off too) and giving up after `timeout_s` in all
(a server that trickles bytes is cut off at the deadline, not only one that goes quiet). Each failure is
an ImageURLError saying which limit, or what, stopped it.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request

CHUNK_BYTES = 64 * 1024
USER_AGENT = "minigpt-serve (image fetch)"


class ImageURLError(ValueError):
    """An image URL that could not be fetched within the limits."""


def is_web_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def fetch_image_bytes(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """The body at `url`: ImageURLError when it is larger than `max_bytes`, takes longer than `timeout_s`
    in all, or the server answers with an error or not at all."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    limit_mb = f"{max_bytes / 2**20:.3g} MB"
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageURLError(f"the image at {url} is {int(declared) / 2**20:.1f} MB, over the {limit_mb} limit")
            body = bytearray()
            while chunk := response.read1(CHUNK_BYTES):  # (what has arrived: a trickle meets the deadline)
                body += chunk
                if len(body) > max_bytes:
                    raise ImageURLError(f"the image at {url} is over the {limit_mb} limit")
                if time.monotonic() > deadline:
                    raise ImageURLError(f"the image at {url} took over the {timeout_s:g} s limit to fetch")
            return bytes(body)
    except ImageURLError:
        raise
    except urllib.error.HTTPError as error:
        raise ImageURLError(f"fetching {url} failed: HTTP {error.code} {error.reason}") from None
    except TimeoutError:
        raise ImageURLError(f"the image at {url} took over the {timeout_s:g} s limit to fetch") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            raise ImageURLError(f"the image at {url} took over the {timeout_s:g} s limit to fetch") from None
        raise ImageURLError(f"fetching {url} failed: {reason}") from None
