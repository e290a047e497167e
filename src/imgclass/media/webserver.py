"""What imgclass's two local web servers share (the live view on 8080, the capture page on 8090):
a threaded server that takes a burst of connections, a request handler that turns away what other
web sites can forge or smuggle, and the MJPEG stream.

Both serve the person at this machine, yet every web page that person opens can send requests to
127.0.0.1. Before any route runs, the handler refuses (one short JSON line, never a traceback):

- a Host that is not a loopback name while listening on loopback: DNS rebinding (evil.example
  resolving to 127.0.0.1) would otherwise make a foreign page same-origin with the server;
- a POST whose ``Origin`` is another site's;
- a body of unknown, malformed or over-limit length, NUL bytes and over-long URLs.

An error answer never leaves an unread body on a kept-alive connection, where it would be parsed
as the next request (request smuggling): a small one is read and dropped, else the connection closes.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import unquote, urlsplit

from ..errors import ImgclassError

log = logging.getLogger("imgclass.media")

MJPEG_BOUNDARY = "imgclass-frame"
MAX_URL = 4096  # characters; a route's query is a few short fields
DRAIN_LIMIT = 64 * 1024  # an unread body up to this is read and dropped; a bigger one closes the connection
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class LocalServer(ThreadingHTTPServer):
    """A threaded HTTP server listening on ``address`` (port 0: any free port); ``url`` says where.

    Args:
        name: what it serves, for the error when the port is taken.

    Example:
        >>> server = LocalServer(("127.0.0.1", 0), LocalHandler, "live view")  # doctest: +SKIP
        >>> server.url  # doctest: +SKIP
        'http://127.0.0.1:40123/'
    """

    daemon_threads = True  # an open MJPEG stream must not keep the process alive
    block_on_close = False
    request_queue_size = socket.SOMAXCONN  # the default 5 drops connections when many arrive at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], name: str):
        super().__init__(address, handler, bind_and_activate=False)
        try:  # by hand: socketserver would call server_close(), which subclasses use to free what they serve
            self.server_bind()
            self.server_activate()
        except OSError as e:
            self.socket.close()
            raise ImgclassError(f"{name}: cannot listen on {address[0]}:{address[1]} ({e.strerror}); "
                                "pick another --port, or stop what uses this one") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):  # listening everywhere: name this machine, not "any address"
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"


class LocalHandler(BaseHTTPRequestHandler):
    """Request handler of imgclass's web servers: checks every request (module docstring), reads its
    body into ``self.body`` (at most ``max_body`` bytes), and answers with ``send_body``,
    ``send_json`` and ``fail``. Subclasses add their own refusals by extending ``refusal``.
    """

    server: LocalServer
    protocol_version = "HTTP/1.1"
    max_body = 0  # bytes
    body = b""
    _unread: int | None = 0  # body bytes not read yet; None: unknown (no trustworthy length)

    def log_message(self, format, *args) -> None:  # keep the terminal for the URL and errors
        log.debug(format, *args)

    def parse_request(self) -> bool:
        """http.server's parsing, then this server's checks and the body; False when it answered already."""
        self.body, self._unread = b"", 0
        if not super().parse_request():
            return False
        if problem := self._problem():
            self.fail(*problem)
            return False
        if self._unread:
            self.body = self.rfile.read(self._unread)
            if len(self.body) < self._unread:  # the client hung up mid-body: nobody to answer
                self.close_connection = True
                return False
            self._unread = 0
        return True

    def _problem(self) -> tuple[int, str] | None:
        """(status, message) when this request must not reach a route; also sets ``_unread``."""
        if "Transfer-Encoding" in self.headers:
            self._unread = None
            return HTTPStatus.BAD_REQUEST, "chunked request bodies are not accepted; send Content-Length"
        lengths = set(self.headers.get_all("Content-Length", []))
        if lengths:
            length = lengths.pop()
            if lengths or not (length.isascii() and length.isdigit()):  # int() takes "-1", "+5", "1_0"
                self._unread = None
                return HTTPStatus.BAD_REQUEST, "Content-Length is not a byte count"
            self._unread = int(length)
        if len(self.path) > MAX_URL:
            return HTTPStatus.BAD_REQUEST, f"request URL is longer than {MAX_URL} characters"
        if "\x00" in unquote(self.path):
            return HTTPStatus.BAD_REQUEST, "request URL contains a NUL byte"
        if refusal := self.refusal():
            return HTTPStatus.FORBIDDEN, refusal
        if self._unread > self.max_body:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, (f"request body of {self._unread} bytes is too large "
                                                         f"(at most {self.max_body})")
        return None

    def refusal(self) -> str | None:
        """Why other web sites may not make this request, if they may not (see the module docstring)."""
        host = self.headers.get("Host", "")
        if ipaddress.ip_address(self.server.server_address[0]).is_loopback:
            name = urlsplit(f"//{host}").hostname or ""
            if name not in LOOPBACK_NAMES and not name.endswith(".localhost"):
                return f"host '{name}' is not this machine's loopback address; open {self.server.url}"
        origin = self.headers.get("Origin")
        if self.command not in ("GET", "HEAD") and origin is not None and origin.lower() != f"http://{host}".lower():
            return f"origin '{origin[:60]}' is another site; only this server's own page may post here"
        return None

    def send_body(self, body: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, data, status: int = HTTPStatus.OK) -> None:
        self.send_body(json.dumps(data).encode(), "application/json", status)

    def fail(self, status: int, message: str) -> None:
        """Answer ``{"error": message}``, first making sure no unread body is taken for the next request."""
        if self._unread is None or self._unread > DRAIN_LIMIT:
            self.close_connection = True
        elif self._unread:
            self.rfile.read(self._unread)
            self._unread = 0
        self.send_json({"error": message}, status)


def serve_mjpeg(handler: BaseHTTPRequestHandler, latest: Callable[[int], tuple[int, bytes | None]],
                running: Callable[[], bool]) -> None:
    """Answer a request with a multipart/x-mixed-replace JPEG stream until ``running()`` turns false
    or the viewer leaves. ``latest(seq)`` waits a little for a frame newer than ``seq`` and returns
    ``(its seq, its JPEG)``, or ``(seq, None)`` when none came.

    Example:
        >>> serve_mjpeg(self, lambda seq: feed.jpeg(after=seq, timeout=1.0), lambda: not stopped)  # doctest: +SKIP
    """
    handler.send_response(HTTPStatus.OK)
    handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}")
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    seq = 0
    try:
        while running():
            new, jpeg = latest(seq)
            if jpeg is None or new == seq:
                continue
            seq = new
            handler.wfile.write(f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                .encode() + jpeg + b"\r\n")
            handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the viewer left
