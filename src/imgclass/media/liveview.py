"""The live view: a local web page showing the annotated frames as they come (MJPEG over HTTP,
any browser, no display needed), or a native window where there is a screen.

Pages of the web view: ``/`` (the page), ``/stream.mjpg`` (multipart JPEG stream),
``/frame.jpg`` (the latest frame) and ``/status`` (the status line as text); a Starlette app on
uvicorn in a background thread (``webstack``: the same stack and checks as the other servers).
"""
from __future__ import annotations

import gc
import html
import logging
import os
import queue
import threading

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import ImgclassError
from ..webstack import BackgroundServer, mjpeg_response, page_app, run_blocking
from .options import LIVEVIEW_PORT, SinkOptions
from .sink import Sink

log = logging.getLogger("imgclass.media")

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{margin:0;background:#111;color:#ddd;font:14px sans-serif;text-align:center}}
img{{max-width:100vw;max-height:92vh}}</style></head><body>
<img src="/stream.mjpg" alt="live view"><div id="s"></div>
<script>setInterval(()=>fetch('/status').then(r=>r.text()).then(t=>{{document.getElementById('s').textContent=t;
document.title=t||'{title}'}}).catch(()=>{{}}),1000)</script></body></html>"""


def has_display() -> bool:
    """Is there a screen to open a window on (X11 or Wayland)?"""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_display(options: SinkOptions) -> Sink:
    """``display://0``: a window where a display exists (and not --headless), else the web page."""
    if has_display() and not options.headless:
        try:
            return WindowSink()
        except ImgclassError as e:
            log.warning(f"{e}; showing the live view as a web page instead")
    return LiveView(options.host, options.port or LIVEVIEW_PORT)


class LiveView(Sink):
    """Serve the frames as a live web page at http://HOST:PORT/ (127.0.0.1 by default: this machine only).

    JPEG encoding happens only while someone is watching, once per frame however many watch.

    Example:
        >>> view = LiveView(port=0)  # doctest: +SKIP
        >>> view.write(frame); print(view.url)  # doctest: +SKIP
        http://127.0.0.1:40123/
    """

    def __init__(self, host: str = "127.0.0.1", port: int = LIVEVIEW_PORT, quality: int = 80):
        self.quality = quality
        self._frame: np.ndarray | None = None
        self._jpeg: bytes | None = None
        self._seq = 0
        self._status = ""
        self._changed = threading.Condition()
        self._closed = False
        self._server = BackgroundServer(self._app(host), host, port, "live view")
        self.url = self._server.url
        self.description = f"live view {self.url}"
        log.warning(f"live view at {self.url} (Ctrl-C to stop)")

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        with self._changed:
            self._frame, self._jpeg, self._seq = image, None, self._seq + 1
            self._changed.notify_all()

    def set_status(self, text: str) -> None:
        self._status = text

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._changed:
                self._changed.notify_all()
            self._server.close()

    def _latest(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait for a frame newer than ``after``; returns (seq, JPEG), or (after, None) on timeout/close."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._seq > after or self._closed, timeout):
                return after, None
            if self._closed or self._frame is None:
                return after, None
            if self._jpeg is None:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(self._frame, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                self._jpeg = buf.tobytes()
            return self._seq, self._jpeg

    def _app(self, host: str) -> Starlette:
        """The web view's routes (module docstring), with the Host and Origin rules of a server on ``host``."""
        page = _PAGE.format(title=html.escape("imgclass live view"))
        no_store = {"Cache-Control": "no-store"}

        async def index(request: Request) -> Response:
            return HTMLResponse(page, headers=no_store)

        async def status(request: Request) -> Response:
            return PlainTextResponse(self._status, headers=no_store)

        async def frame(request: Request) -> Response:
            _, jpeg = await run_blocking(self._latest, 0, 10)
            if jpeg is None:
                raise HTTPException(503, "no frame yet")
            return Response(jpeg, media_type="image/jpeg", headers=no_store)

        async def stream(request: Request) -> Response:
            return mjpeg_response(lambda seq: self._latest(seq, 0.5), lambda: not self._closed)

        return page_app([Route("/", index), Route("/status", status), Route("/frame.jpg", frame),
                         Route("/stream.mjpg", stream)], host)


class WindowSink(Sink):
    """A native window (Tk, from the standard library), run in its own thread.

    Raises ImgclassError when no window can be opened (no Tk, no usable display), so the
    caller can fall back to the web view; closing the window ends ``is_streaming``.
    """

    def __init__(self, title: str = "imgclass"):
        self._frames: queue.Queue = queue.Queue(maxsize=2)
        self._opened = threading.Event()
        self._error: str | None = None
        self.is_streaming = True
        self.description = "window"
        self._title, self._status = title, ""
        self._thread = threading.Thread(target=self._run, name="window", daemon=True)
        self._thread.start()
        self._opened.wait(timeout=10)
        if self._error or not self._opened.is_set():
            raise ImgclassError(f"cannot open a window ({self._error or 'no answer from the display'})")

    def _run(self) -> None:
        try:
            import tkinter
            from PIL import Image, ImageTk
            tkinter.NoDefaultRoot()  # no module-level root: the main thread must never own a Tk object
            root = tkinter.Tk()
        except Exception as e:  # ImportError (no Tk) or TclError (no usable display)
            self._error = str(e).strip() or type(e).__name__
            self._opened.set()
            return
        root.title(self._title)
        label = tkinter.Label(root)
        label.pack()

        def show() -> None:
            try:
                item = self._frames.get_nowait()
            except queue.Empty:
                item = None
            if item is False:
                root.destroy()
                return
            if isinstance(item, tuple):
                image, status = item
                photo = ImageTk.PhotoImage(Image.fromarray(image), master=root)
                label.configure(image=photo)
                label.image = photo  # Tk keeps no reference of its own
                if status:
                    root.title(status)
            root.after(5, show)

        def closed() -> None:
            self.is_streaming = False
            root.destroy()

        root.protocol("WM_DELETE_WINDOW", closed)
        root.after(0, show)
        self._opened.set()
        root.mainloop()
        self.is_streaming = False
        # Tk objects must die in the thread that made them, or Tcl aborts the process at exit
        label.image = None
        label = root = None
        gc.collect()

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        if not self.is_streaming:
            return
        try:  # drop a frame rather than stall the pipeline when the screen is slower
            self._frames.put_nowait((image, self._status))
        except queue.Full:
            pass

    def set_status(self, text: str) -> None:
        self._status = text

    def close(self) -> None:
        if self._thread.is_alive():
            self._frames.put(False)
            self._thread.join(timeout=5)
