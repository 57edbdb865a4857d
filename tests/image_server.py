"""An image server on 127.0.0.1 for tests of images named by http(s) URLs (a fixture): a good image,
bodies over LIMIT bytes with and without a Content-Length, one that trickles its bytes, and 404s."""
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

LIMIT = 50_000


def png_bytes(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "red").save(buffer, "PNG")
    return buffer.getvalue()


class Images(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/red.png":
            self.answer(png_bytes())
        elif self.path == "/large.bin":
            self.answer(b"\0" * (LIMIT * 2))
        elif self.path == "/large-unsized.bin":  # no Content-Length: only counting the bytes read catches it
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"\0" * (LIMIT * 2))
        elif self.path == "/slow.png":  # a byte every 0.1 s: never quiet for long, slow in all
            body = png_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for byte in body[:40]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.send_error(404)

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
