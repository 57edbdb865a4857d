"""Images named by http(s) URLs in chat requests, fetched by the server within its size and time limits,
against image servers this test starts on 127.0.0.1: a good one, one whose body is too large (with and
without a Content-Length), one that trickles its bytes past the deadline, one that answers 404."""
import time

import pytest
from image_server import LIMIT, image_server, png_bytes  # noqa: F401  (image_server: a fixture)

from minigpt.serving.image_urls import ImageURLError, fetch_image_bytes


def test_an_image_url_is_fetched_within_the_limits(image_server):
    assert fetch_image_bytes(f"{image_server}/red.png", LIMIT, 5.0) == png_bytes()


@pytest.mark.parametrize("path, limit, timeout, message", [
    ("/large.bin", LIMIT, 5.0, "MB, over the 0.0477 MB limit"),
    ("/large-unsized.bin", LIMIT, 5.0, "over the 0.0477 MB limit"),
    ("/slow.png", LIMIT, 1.0, "took over the 1 s limit"),
    ("/missing.png", LIMIT, 5.0, "HTTP 404"),
])
def test_what_stops_a_fetch_is_named(image_server, path, limit, timeout, message):
    started = time.monotonic()
    with pytest.raises(ImageURLError, match=message):
        fetch_image_bytes(f"{image_server}{path}", limit, timeout)
    assert time.monotonic() - started < timeout + 1.5  # cut off at the deadline, not when the server is done


def test_a_server_that_is_not_there_is_named():
    with pytest.raises(ImageURLError, match="fetching http://127.0.0.1:9/x.png failed"):
        fetch_image_bytes("http://127.0.0.1:9/x.png", LIMIT, 2.0)
