"""The capture page's web server: the page, the live MJPEG stream and a small JSON API.

Standard library only (``http.server``): the page is used by one person at a time, so a
threaded server is plenty, and nothing needs installing on a headless box.

Routes:
    GET  /                      the page (static/index.html, app.js, style.css)
    GET  /stream.mjpg           live frames of the server's input (multipart MJPEG)
    GET  /api/state             classes, counts per set, warnings, recent captures, training
    GET  /api/image?path=REL    a saved capture (thumbnails), only inside the dataset
    GET  /api/predict           the trained model's scores on the current frame
    POST /api/class             {"name": ...}: add a class
    POST /api/capture?set=&class=&quality=   save the current frame, or the JPEG in the body
                                             (the browser's own camera)
    POST /api/undo              delete the last capture
    POST /api/train             run `imgclass train` + `imgclass export`
    POST /api/predict           scores on the JPEG in the body
"""
from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import socket
import threading
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from ..errors import ImgclassError
from ..media.liveview import serve_mjpeg
from ..media.options import SourceOptions
from ..media.sources import open_source
from .dataset import AUTO, SETS, Dataset, decode_jpeg
from .feed import LiveFeed
from .trainer import Preview, TrainJob, shell_line, train_commands

log = logging.getLogger("imgclass.capture")
MAX_BODY = 32 * 1024 * 1024  # a posted camera frame is well under this
STATIC = resources.files("imgclass.capture").joinpath("static")
API_HEADER = "X-Imgclass"  # every POST carries it (see Handler._refusal)


class CaptureApp:
    """What the page talks to: the dataset, the live input (None: the browser's camera only),
    the training job and, once trained, the model preview.

    Example:
        >>> app = CaptureApp(Dataset("data/mugs"), LiveFeed(open_source("clip.mp4", loop=-1)),  # doctest: +SKIP
        ...                  model_dir="models/mugs")
    """

    def __init__(self, dataset: Dataset, feed: LiveFeed | None = None, *, source_name: str = "",
                 model_dir: str | Path = "model", train: list[list[str]] | None = None):
        self.dataset, self.feed, self.source_name = dataset, feed, source_name
        self.model_dir = Path(model_dir)
        self.commands = train or train_commands(dataset.root, self.model_dir)
        self.job = TrainJob(self.commands, on_success=self._load_preview)
        self.preview: Preview | None = None

    @classmethod
    def from_input(cls, uri: str | None, dataset: Dataset, options: SourceOptions | None = None,
                   model_dir: str | Path | None = None) -> "CaptureApp":
        """The app for an input URI (camera, video file, stream), or None for the browser's camera only.

        A video file plays on repeat at its own speed, like a camera; ``model_dir`` defaults to
        ``models/<dataset folder name>`` (jetson's tutorial layout).

        Example:
            >>> app = CaptureApp.from_input("/dev/video0", Dataset("data/mugs"))  # doctest: +SKIP
            >>> app.state()["train"]["command"]  # doctest: +SKIP
            'imgclass train /home/me/data/mugs --model-dir models/mugs && imgclass export --model-dir models/mugs'
        """
        feed = None
        if uri is not None:
            source = open_source(uri, replace(options or SourceOptions(), loop=-1))
            feed = LiveFeed(source, realtime=not source.is_live)
        return cls(dataset, feed, source_name=str(uri or ""), model_dir=model_dir or Path("models") / dataset.root.name)

    def _load_preview(self) -> None:
        self.preview = Preview(self.model_dir / "model.onnx")

    def state(self) -> dict:
        counts = self.dataset.counts()
        return {
            "dataset": str(self.dataset.root),
            "classes": self.dataset.classes,
            "sets": [AUTO, *SETS],
            "counts": counts,
            "warnings": self.dataset.warnings(),
            "recent": [{"set": c.set, "label": c.label, "path": c.relpath} for c in self.dataset.recent(8)],
            "source": {"server": self.feed is not None, "name": self.source_name,
                       "error": self.feed.error if self.feed else None},
            "train": {"command": shell_line(self.commands), **self.job.status()},
            "preview": self.preview is not None,
        }

    def capture(self, set_name: str, label: str, quality: int, body: bytes) -> dict:
        if body:
            image = body
        elif self.feed is None:
            raise ImgclassError("this server has no input of its own; use the browser's camera")
        elif (image := self.feed.latest()) is None:
            raise ImgclassError(f"no frame from {self.source_name} yet" + (f": {self.feed.error}" if self.feed.error else ""))
        self.dataset.save(image, set_name, label, quality)
        return self.state()

    def predict(self, body: bytes) -> list[dict]:
        if self.preview is None:
            raise ImgclassError("no trained model yet; press Train first")
        if body:
            image = decode_jpeg(body)
        elif self.feed is None or (image := self.feed.latest()) is None:
            raise ImgclassError("no frame to classify yet")
        return self.preview.scores(image)

    def close(self) -> None:
        self.job.stop()
        if self.feed is not None:
            self.feed.close()


class CaptureServer(ThreadingHTTPServer):
    """A CaptureApp on ``host:port`` (port 0: any free port); ``url`` says where.

    Example:
        >>> with CaptureServer(app, "127.0.0.1", 0) as server:  # doctest: +SKIP
        ...     threading.Thread(target=server.serve_forever, daemon=True).start()
        ...     print(server.url)
        http://127.0.0.1:40123/
    """

    daemon_threads = True  # an open MJPEG stream must not keep the process alive
    block_on_close = False

    def __init__(self, app: CaptureApp, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.stopping = threading.Event()
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            raise ImgclassError(f"cannot listen on {host}:{port} ({e.strerror}); "
                                "pick another --port, or stop what uses this one") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):  # listening everywhere: name this machine, not "any address"
            host = socket.gethostname()
        return f"http://{host}:{port}/"

    def shutdown(self) -> None:
        self.stopping.set()  # streams end at their next frame
        super().shutdown()

    def server_close(self) -> None:
        super().server_close()
        self.app.close()


class Handler(BaseHTTPRequestHandler):
    server: CaptureServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # keep the terminal for the URL and errors
        log.debug(format, *args)

    # --- plumbing -------------------------------------------------------------------------------
    def _send(self, body: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, status: int = HTTPStatus.OK) -> None:
        self._send(json.dumps(data).encode(), "application/json", status)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ImgclassError(f"request body of {length} bytes is too large")
        return self.rfile.read(length) if length else b""

    def _dispatch(self, routes: dict) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = routes.get(url.path)
        try:
            if refusal := self._refusal():
                self._json({"error": refusal}, HTTPStatus.FORBIDDEN)
                return
            body = self._body() if self.command == "POST" else b""
            if route is None:
                self._json({"error": f"{url.path}: not found"}, HTTPStatus.NOT_FOUND)
            else:
                route(query, body)
        except ImgclassError as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away
        except Exception as e:  # noqa: BLE001 - the page shows one line; the log keeps the traceback
            log.exception("capture server error")
            self._json({"error": f"internal error: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _refusal(self) -> str | None:
        """Why this request must not be served, if it must not: other web sites stay out.

        A page on any site can send "simple" requests to 127.0.0.1; a custom header on every POST
        forces the browser to ask first (a CORS preflight this server never grants), and a Host
        check on a loopback server defeats DNS rebinding (evil.example resolving to 127.0.0.1).
        """
        if self.command == "POST" and self.headers.get(API_HEADER) != "1":
            return f"POST requests need the header '{API_HEADER}: 1'"
        host = self.server.server_address[0]
        if ipaddress.ip_address(host).is_loopback:
            name = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
            if name not in ("localhost", "127.0.0.1", "::1") and not name.endswith(".localhost"):
                return f"host '{name}' is not this machine's loopback address; open {self.server.url}"
        return None

    def do_GET(self) -> None:
        app = self.server.app
        self._dispatch({
            "/": lambda q, b: self._static("index.html"),
            "/app.js": lambda q, b: self._static("app.js"),
            "/style.css": lambda q, b: self._static("style.css"),
            "/stream.mjpg": lambda q, b: self._stream(),
            "/api/state": lambda q, b: self._json(app.state()),
            "/api/image": lambda q, b: self._send(app.dataset.resolve(q.get("path", "")).read_bytes(), "image/jpeg"),
            "/api/predict": lambda q, b: self._json(app.predict(b"")),
        })

    def do_POST(self) -> None:
        app = self.server.app

        def add_class(q, body):
            app.dataset.add_class(_json_field(body, "name"))
            self._json(app.state())

        def undo(q, body):
            app.dataset.undo()
            self._json(app.state())

        def train(q, body):
            app.job.start()
            self._json(app.state())

        self._dispatch({
            "/api/class": add_class,
            "/api/capture": lambda q, b: self._json(app.capture(q.get("set", AUTO), q.get("class", ""),
                                                                _int(q.get("quality", "95"), "quality"), b)),
            "/api/undo": undo,
            "/api/train": train,
            "/api/predict": lambda q, b: self._json(app.predict(b)),
        })

    def _static(self, name: str) -> None:
        self._send(STATIC.joinpath(name).read_bytes(), mimetypes.guess_type(name)[0] or "application/octet-stream")

    def _stream(self) -> None:
        """multipart/x-mixed-replace: each part one JPEG, sent when the feed has a new frame."""
        feed = self.server.app.feed
        if feed is None:
            raise ImgclassError("this server has no input of its own; use the browser's camera")
        stopping = self.server.stopping
        serve_mjpeg(self, lambda seq: feed.jpeg(after=seq, timeout=1.0),
                    lambda: not (stopping.is_set() or feed.stopped or feed.error))

def _json_field(body: bytes, key: str) -> str:
    try:
        value = json.loads(body or b"{}").get(key)
    except (ValueError, AttributeError):
        raise ImgclassError("request body is not a JSON object") from None
    if not isinstance(value, str):
        raise ImgclassError(f"request needs a text field '{key}'")
    return value


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ImgclassError(f"{what} {text!r} is not a whole number") from None


def serve(app: CaptureApp, host: str = "127.0.0.1", port: int = 0,
          ready: Callable[[CaptureServer], None] | None = None) -> None:
    """Serve ``app`` until Ctrl-C (or ``server.shutdown()`` from another thread), then clean up.

    Args:
        ready: called with the server once it listens; by default its URL is printed.

    Example:
        >>> serve(CaptureApp.from_input("0", Dataset("data/mugs")), port=8090)  # doctest: +SKIP
        open http://127.0.0.1:8090/
    """
    try:
        server = CaptureServer(app, host, port)
    except ImgclassError:
        app.close()
        raise
    try:
        (ready or (lambda s: print(f"open {s.url}", flush=True)))(server)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.stopping.set()
        server.server_close()
