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

import json
import logging
import mimetypes
import threading
from dataclasses import replace
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from ..errors import ImgclassError
from ..media.options import SourceOptions
from ..media.sources import open_source
from ..media.webserver import LocalHandler, LocalServer, serve_mjpeg
from .dataset import AUTO, SETS, Dataset, decode_jpeg
from .feed import LiveFeed
from .trainer import Preview, TrainJob, shell_line, train_commands

log = logging.getLogger("imgclass.capture")
MAX_BODY = 32 * 1024 * 1024  # a posted camera frame is well under this
STATIC = resources.files("imgclass.capture").joinpath("static")
API_HEADER = "X-Imgclass"  # every POST carries it (see Handler.refusal)


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
            decode_jpeg(body)  # the page posts JPEGs only, within the size limit
            image = body
        elif self.feed is None or (image := self.feed.latest()) is None:
            raise ImgclassError("no frame to classify yet")
        return self.preview.scores(image)

    def close(self) -> None:
        self.job.stop()
        if self.feed is not None:
            self.feed.close()


class CaptureServer(LocalServer):
    """A CaptureApp on ``host:port`` (port 0: any free port); ``url`` says where.

    Example:
        >>> with CaptureServer(app, "127.0.0.1", 0) as server:  # doctest: +SKIP
        ...     threading.Thread(target=server.serve_forever, daemon=True).start()
        ...     print(server.url)
        http://127.0.0.1:40123/
    """

    def __init__(self, app: CaptureApp, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.stopping = threading.Event()
        super().__init__((host, port), Handler, "capture page")

    def shutdown(self) -> None:
        self.stopping.set()  # streams end at their next frame
        super().shutdown()

    def server_close(self) -> None:
        super().server_close()
        self.app.close()


class Handler(LocalHandler):
    """The routes of the module docstring, behind LocalHandler's checks; errors answer ``{"error": ...}``."""

    server: CaptureServer
    max_body = MAX_BODY

    def _dispatch(self, routes: dict) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = routes.get(url.path)
        try:
            if route is None:
                self.fail(HTTPStatus.NOT_FOUND, f"{url.path}: not found")
            else:
                route(query, self.body)
        except ImgclassError as e:
            self.fail(HTTPStatus.BAD_REQUEST, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away
        except Exception as e:  # noqa: BLE001 - the page shows one line; the log keeps the traceback
            log.exception("capture server error")
            self.fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {e}")

    def refusal(self) -> str | None:
        """Besides Host and Origin (LocalHandler): a custom header on every POST, which a page of
        another site cannot send without asking first (a CORS preflight this server never grants).
        """
        if self.command == "POST" and self.headers.get(API_HEADER) != "1":
            return f"POST requests need the header '{API_HEADER}: 1'"
        return super().refusal()

    def do_GET(self) -> None:
        app = self.server.app
        self._dispatch({
            "/": lambda q, b: self._static("index.html"),
            "/app.js": lambda q, b: self._static("app.js"),
            "/style.css": lambda q, b: self._static("style.css"),
            "/stream.mjpg": lambda q, b: self._stream(),
            "/api/state": lambda q, b: self.send_json(app.state()),
            "/api/image": lambda q, b: self.send_body(app.dataset.resolve(q.get("path", "")).read_bytes(), "image/jpeg"),
            "/api/predict": lambda q, b: self.send_json(app.predict(b"")),
        })

    def do_POST(self) -> None:
        app = self.server.app

        def add_class(q, body):
            app.dataset.add_class(_json_field(body, "name"))
            self.send_json(app.state())

        def undo(q, body):
            app.dataset.undo()
            self.send_json(app.state())

        def train(q, body):
            app.job.start()
            self.send_json(app.state())

        self._dispatch({
            "/api/class": add_class,
            "/api/capture": lambda q, b: self.send_json(app.capture(q.get("set", AUTO), q.get("class", ""),
                                                                    _int(q.get("quality", "95"), "quality"), b)),
            "/api/undo": undo,
            "/api/train": train,
            "/api/predict": lambda q, b: self.send_json(app.predict(b)),
        })

    def _static(self, name: str) -> None:
        self.send_body(STATIC.joinpath(name).read_bytes(), mimetypes.guess_type(name)[0] or "application/octet-stream")

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
