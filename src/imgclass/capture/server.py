"""The capture page's web server: the page, the live MJPEG stream and a small JSON API, a Starlette
app on uvicorn in a background thread (``webstack``: the same stack and checks as ``imgclass serve``).

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

Errors are JSON ``{"error": ...}``: 400 bad input, 403 a request another site could forge (a foreign
Host or Origin, or a POST without the ``X-Imgclass`` header), 404, 413 a body over 32 MB.
"""
from __future__ import annotations

import json
import logging
import mimetypes
import threading
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Awaitable, Callable, Iterable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ImgclassError
from ..media.options import SourceOptions
from ..media.sources import open_source
from ..webstack import BackgroundServer, mjpeg_response, page_app, run_blocking
from .dataset import AUTO, SETS, Dataset, decode_jpeg
from .feed import LiveFeed
from .trainer import Preview, TrainJob, shell_line, train_commands

log = logging.getLogger("imgclass.capture")
MAX_BODY_MB = 32  # a posted camera frame is well under this
STATIC = resources.files("imgclass.capture").joinpath("static")
API_HEADER = "X-Imgclass"  # every POST carries it (see api_post)


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


class CaptureServer(BackgroundServer):
    """A CaptureApp served on ``host:port`` (port 0: any free port) from a background thread;
    ``url`` says where, ``close()`` stops it and closes the app.

    Args:
        allow_origins: other origins whose pages may use it (``--allow-origin``).

    Example:
        >>> with CaptureServer(app, "127.0.0.1", 0) as server:  # doctest: +SKIP
        ...     print(server.url)
        http://127.0.0.1:40123/
    """

    def __init__(self, app: CaptureApp, host: str = "127.0.0.1", port: int = 0, allow_origins: Iterable[str] = ()):
        self.app = app
        self.stopping = threading.Event()  # streams end at their next frame
        super().__init__(create_app(app, host, allow_origins, self.stopping), host, port, "capture page")

    def close(self) -> None:
        self.stopping.set()
        try:
            super().close()
        finally:
            self.app.close()


def create_app(app: CaptureApp, host: str, allow_origins: Iterable[str] = (),
               stopping: threading.Event | None = None) -> Starlette:
    """The routes of the module docstring over ``app``, with the Host and Origin rules of a server
    listening on ``host``; MJPEG streams end when ``stopping`` is set."""
    stopping = stopping or threading.Event()

    async def state(request: Request) -> JSONResponse:
        return await _json(app.state)

    async def predict_live(request: Request) -> JSONResponse:
        return await _json(app.predict, b"")

    async def stream(request: Request) -> Response:
        feed = app.feed
        if feed is None:
            raise ImgclassError("this server has no input of its own; use the browser's camera")
        return mjpeg_response(lambda seq: feed.jpeg(after=seq, timeout=0.5),
                              lambda: not (stopping.is_set() or feed.stopped or feed.error))

    async def image(request: Request) -> Response:
        path = app.dataset.resolve(request.query_params.get("path", ""))
        return _bytes(await run_blocking(path.read_bytes), "image/jpeg")

    def add_class(request: Request, body: bytes) -> dict:
        app.dataset.add_class(_json_field(body, "name"))
        return app.state()

    def capture(request: Request, body: bytes) -> dict:
        q = request.query_params
        return app.capture(q.get("set", AUTO), q.get("class", ""), _int(q.get("quality", "95"), "quality"), body)

    def undo(request: Request, body: bytes) -> dict:
        app.dataset.undo()
        return app.state()

    def train(request: Request, body: bytes) -> dict:
        app.job.start()
        return app.state()

    routes = [*(Route(path, _static(name)) for path, name in (("/", "index.html"), ("/app.js", "app.js"),
                                                               ("/style.css", "style.css"))),
              Route("/stream.mjpg", stream), Route("/api/state", state), Route("/api/image", image),
              Route("/api/predict", predict_live),
              *(Route(path, api_post(handler), methods=["POST"])
                for path, handler in (("/api/class", add_class), ("/api/capture", capture), ("/api/undo", undo),
                                      ("/api/train", train), ("/api/predict", lambda r, body: app.predict(body))))]
    return page_app(routes, host, allow_origins, max_body_mb=MAX_BODY_MB)


def api_post(handler: Callable[[Request, bytes], dict | list]) -> Callable[[Request], Awaitable[JSONResponse]]:
    """A POST route answering ``handler(request, body)`` as JSON (in the executor: it touches disk or
    runs the model), for requests that carry ``X-Imgclass: 1``: a header a page of another site
    cannot send without asking first (a CORS preflight this server never grants). Checked before
    the body is read, so a refused request never gets ``100 Continue``."""
    async def endpoint(request: Request) -> JSONResponse:
        if request.headers.get(API_HEADER) != "1":
            raise HTTPException(403, f"POST requests need the header '{API_HEADER}: 1'")
        body = await request.body()
        return await _json(handler, request, body)
    return endpoint


async def _json(fn: Callable, *args) -> JSONResponse:
    return JSONResponse(await run_blocking(fn, *args), headers={"Cache-Control": "no-store"})


def _bytes(body: bytes, content_type: str) -> Response:
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


def _static(name: str) -> Callable[[Request], Awaitable[Response]]:
    """A route answering the packaged file ``static/name``."""
    async def endpoint(request: Request) -> Response:
        return _bytes(STATIC.joinpath(name).read_bytes(), mimetypes.guess_type(name)[0] or "application/octet-stream")
    return endpoint


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


def serve(app: CaptureApp, host: str = "127.0.0.1", port: int = 0, allow_origins: Iterable[str] = (),
          ready: Callable[[CaptureServer], None] | None = None) -> None:
    """Serve ``app`` until Ctrl-C (or ``server.close()`` from another thread), then clean up.

    Args:
        allow_origins: other origins whose pages may use it (``--allow-origin``).
        ready: called with the server once it listens; by default its URL is printed.

    Example:
        >>> serve(CaptureApp.from_input("0", Dataset("data/mugs")), port=8090)  # doctest: +SKIP
        open http://127.0.0.1:8090/
    """
    try:
        server = CaptureServer(app, host, port, allow_origins)
    except ImgclassError:
        app.close()
        raise
    try:
        (ready or (lambda s: print(f"open {s.url}", flush=True)))(server)
        server.wait()
    finally:
        server.close()
