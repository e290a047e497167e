"""What imgclass's web servers share (``imgclass serve``, the capture page, the live view), all
Starlette on uvicorn: one middleware for what request bodies may cost, the check that keeps other
web sites' pages away from the routes a browser uses, and for the local pages a guarded app, a
server in a background thread and the MJPEG stream.

A server that buffers request bodies can be made to hold memory by clients that send slowly, or
that send many large bodies at once: ``RequestLimits`` bounds each body, all bodies in flight
together, and how long a body may stall. ``SameSite`` refuses what a foreign page can make a
browser send: a Host that is not one of the server's names (DNS rebinding: evil.example resolving
to this machine would make its page same-origin with the server), or another site's Origin.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterable
from urllib.parse import unquote, urlsplit

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE as MAX_HEAD  # uvicorn's default too
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import ImgclassError


MB = 2 ** 20
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_ADDRESS = ("0.0.0.0", "::", "")
DRAIN_LIMIT = 64 * 1024  # a refused body up to this is read and dropped; past it the connection closes
MAX_URL = 4096  # characters; a local page's query is a few short fields
MJPEG_BOUNDARY = "imgclass-frame"


class RequestRefused(Exception):
    """A request the limits turn away once its body is under way (``RequestLimits`` answers it)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self)}, self.status, headers=self.headers)


class RequestLimits:
    """ASGI middleware, the one place for request limits; each refusal is JSON ``{"error": ...}``:

    - 413 for a body over ``max_body_mb`` (or over the whole budget): at once when Content-Length
      says so, else as soon as the streamed body passes it;
    - 503 with Retry-After when the bodies in flight would pass ``max_inflight_mb`` together: a
      request reserves its Content-Length before its body is read (a body without one, its bytes as
      they arrive) and gives the reservation back when it ends;
    - 408 when no body chunk comes for ``body_timeout_s`` (when the response has started, the
      exception goes on to the server, which closes the connection).

    An answer that leaves the body unread closes the connection (``Connection: close``) unless the
    rest is small and on its way, for the server to read and drop: an unread body must never be
    parsed as the next request, and a client waiting for ``100 Continue`` sends none.

    Example:
        >>> app = RequestLimits(app, max_body_mb=20, max_inflight_mb=256, body_timeout_s=30)  # doctest: +SKIP
    """

    def __init__(self, app: ASGIApp, max_body_mb: float, max_inflight_mb: float, body_timeout_s: float):
        self.app, self.timeout_s = app, body_timeout_s
        largest = min(max_body_mb, max_inflight_mb)
        self.max_body, self.budget = round(largest * MB), round(max_inflight_mb * MB)
        self.too_large = f"request body too large: over {largest:g} MB, the server's limit"
        self.busy = f"server busy: request bodies in flight fill its {max_inflight_mb:g} MB; retry shortly"
        self.in_flight = 0  # bytes reserved by the requests under way

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        digits = length.isascii() and length.isdigit()
        declared = None if "transfer-encoding" in headers else int(length) if digits else 0  # None: chunked
        waits_for_continue = headers.get("expect", "").lower() == "100-continue"
        reserved = received = 0
        body_done = started = False

        def reserve(size: int) -> None:
            nonlocal reserved
            if size > self.max_body:
                raise RequestRefused(413, self.too_large)
            if self.in_flight - reserved + size > self.budget:
                raise RequestRefused(503, self.busy, {"Retry-After": "1"})
            self.in_flight += size - reserved
            reserved = size

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # what follows the body is the disconnect, which may come whenever it likes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                # The body is abandoned half-read: the connection cannot carry another request.
                raise RequestRefused(408, f"the request body stalled (nothing for {self.timeout_s:g} s); send it "
                                          "without pausing", {"Connection": "close"}) from None
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > reserved:
                reserve(received)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                unread = None if declared is None else declared - received
                if not body_done and (unread is None or unread > DRAIN_LIMIT or (unread and waits_for_continue)):
                    message = _closing(message)
            await send(message)

        try:
            reserve(declared or 0)
            await self.app(scope, limited_receive, watched_send)
        except RequestRefused as refused:
            if started:
                raise
            await refused.response()(scope, receive, send)
        finally:
            self.in_flight -= reserved


class SameSite:
    """Which browser requests a server bound to ``host`` takes: those naming it by one of its names
    (the loopback names, ``host`` itself, the address the connection came in on and, bound to every
    address, this machine's name and addresses), from its own page or one of ``allow_origins``
    (origins as ``origin_of`` accepts them, whose names count too).

    Example:
        >>> guard = SameSite("0.0.0.0", ["https://imgclass.example.com"])  # doctest: +SKIP
        >>> guard.refusal(scope)  # None, or why a 403  # doctest: +SKIP
    """

    def __init__(self, host: str, allow_origins: Iterable[str] = ()):
        self.origins = frozenset(map(origin_of, allow_origins))
        self.names = frozenset({*LOOPBACK_NAMES, host.strip("[]").lower(), *map(_hostname, self.origins)})
        if host in EVERY_ADDRESS:
            self.names |= machine_names()

    def refusal(self, scope: Scope) -> str | None:
        """Why this request may not reach a browser route (a 403), or None."""
        headers = Headers(scope=scope)
        host, origin = headers.get("host", ""), headers.get("origin")
        if not self._names_this_server(_hostname(host), scope):
            return f"host '{host[:60]}' is not a name of this server; open it by its own address"
        own = f"{scope.get('scheme', 'http')}://{host}".lower()
        if origin is not None and origin.lower() not in {own, *self.origins}:
            return f"origin '{origin[:60]}' is another site; only this server's own page may send this"
        return None

    def _names_this_server(self, name: str, scope: Scope) -> bool:
        # Browsers resolve *.localhost to loopback themselves; the address a connection came in on is this machine's.
        server = scope.get("server")
        return bool(name) and (name in self.names or name.endswith(".localhost")
                               or (server is not None and name == server[0]))


def origin_of(value: str) -> str | None:
    """``value`` as a browser's Origin header says it (``scheme://host[:port]``, lowercase), or None
    when it is not one."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def machine_names() -> frozenset[str]:
    """This machine's name and the addresses it resolves to (lowercase)."""
    name = socket.gethostname().lower()
    try:
        return frozenset({name, *(info[4][0] for info in socket.getaddrinfo(name, None))})
    except OSError:  # a name with no address: the connection's own address still names the machine
        return frozenset({name})


def _hostname(host: str) -> str:
    """The name in a Host header or an origin, lowercase, without port or brackets ('' when malformed)."""
    try:
        return urlsplit(host if "//" in host else f"//{host}").hostname or ""
    except ValueError:
        return ""


def _closing(start: Message) -> Message:
    """``start`` (an ``http.response.start``) with ``Connection: close`` as its only Connection header."""
    headers = [(name, value) for name, value in start.get("headers", []) if name.lower() != b"connection"]
    return {**start, "headers": [*headers, (b"connection", b"close")]}


# --- errors as one JSON line ---------------------------------------------------------------------

def json_error(status: int, headers: dict[str, str] | None = None):
    """An exception handler answering ``{"error": str(exc)}`` with ``status``."""
    def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status, headers=headers)
    return handler


def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the server's log (Starlette re-raises after this answer); the client gets one line.
    return JSONResponse({"error": f"internal error ({type(exc).__name__}: {exc}); see the server's log"}, 500)


ERROR_HANDLERS = {ImgclassError: json_error(400), HTTPException: _http_error, Exception: _internal_error}


# --- the local pages: the capture page and the live view ------------------------------------------

PAGE_INFLIGHT_MB = 64  # request bodies in flight together: a few posted camera frames
PAGE_BODY_TIMEOUT_S = 30.0
HEAD_TIMEOUT_S = 10.0  # to send a whole request head, from when the server waits for one
MAX_CONNECTIONS = 200  # open at once; far under any file-descriptor limit, far over one person's tabs
PAGE_THREADS = 8  # the server's executor: blocking route work and MJPEG frame waits


class PageGuard:
    """ASGI middleware of the local pages, before any route; each refusal is JSON ``{"error": ...}``:
    400 for a chunked body (they take Content-Length only), a URL over ``MAX_URL`` characters or
    with a NUL byte, 403 for what ``same_site`` refuses.
    """

    def __init__(self, app: ASGIApp, same_site: SameSite):
        self.app, self.same_site = app, same_site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := self.refusal(scope)):
            status, message = refusal
            return await JSONResponse({"error": message}, status)(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, why) when this request must not reach a route, else None."""
        url = scope.get("raw_path", scope["path"].encode()) + b"?" + scope.get("query_string", b"")
        if "transfer-encoding" in Headers(scope=scope):
            return 400, "chunked request bodies are not accepted; send Content-Length"
        if len(url) > MAX_URL:
            return 400, f"request URL is longer than {MAX_URL} characters"
        if "\x00" in unquote(url.decode("latin-1")):
            return 400, "request URL contains a NUL byte"
        if why := self.same_site.refusal(scope):
            return 403, why
        return None


def page_app(routes: list[Route], host: str, allow_origins: Iterable[str] = (), max_body_mb: float = 32) -> Starlette:
    """A local page's ASGI app: ``routes`` behind the request limits and ``PageGuard`` (whose Host and
    Origin rules are those of a server listening on ``host``), errors as one JSON line.

    Example:
        >>> app = page_app([Route("/", page)], "127.0.0.1")  # doctest: +SKIP
    """
    # RequestLimits outermost: it decides, for every answer, whether an unread body closes the connection.
    middleware = [Middleware(RequestLimits, max_body_mb=max_body_mb, max_inflight_mb=PAGE_INFLIGHT_MB,
                             body_timeout_s=PAGE_BODY_TIMEOUT_S),
                  Middleware(PageGuard, same_site=SameSite(host, allow_origins))]
    return Starlette(routes=routes, middleware=middleware, exception_handlers=ERROR_HANDLERS)


# A request head, and what h11 accepts in one but other parsers read otherwise (a proxy in front, or
# the hand-written parser these pages had): a folded header line (obs-fold, RFC 9112 5.2) that h11
# would join to the line above, and a Content-Length list ("5, 5") that h11 would read as one number.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FOLDED_LINE = re.compile(rb"\n[ \t]")
_LENGTH_LIST = re.compile(rb"\ncontent-length[ \t]*:[^\n]*,", re.IGNORECASE)


def _head_problem(buffer: bytes) -> str | None:
    """Why the request head at the start of ``buffer`` (whole or not yet) is refused, or None."""
    end = _HEAD_END.search(buffer)
    head = buffer[:end.start()] if end else buffer
    if _FOLDED_LINE.search(head):
        return "folded header line (a line starting with a space or tab); send each header on one line"
    if _LENGTH_LIST.search(head):
        return "bad Content-Length: a list; send one byte count"
    return None


class StrictConnection(h11.Connection):
    """h11's server side that also refuses what ``_head_problem`` finds, and keeps why it refused
    a request (``problem``) for the 400's message."""

    problem = ""

    def next_event(self):
        if self.their_state is h11.IDLE and (why := _head_problem(self.trailing_data[0])):
            self.problem = why
            raise h11.RemoteProtocolError(why, error_status_hint=400)
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.problem = str(e)
            raise


class StrictProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 (h11) with what it lacks against stalled and smuggling clients, for the
    pages and ``imgclass serve`` alike:

    - a request head must come whole within ``head_timeout_s`` of the server waiting for it
      (uvicorn times out only kept-alive connections that send nothing);
    - at most ``max_connections`` open: one more closes the one that has waited longest for a head
      (or, when all are busy, itself), so stalled sockets never lock the server out nor use up the
      process's file descriptors;
    - ``StrictConnection``'s parsing, and a malformed request's 400 as one JSON line saying why;
    - TCP_NODELAY (``set_nodelay``).

    The limits are the pages' (HEAD_TIMEOUT_S, MAX_CONNECTIONS); ``limited`` makes the class for others.
    """

    head_timeout_s, max_connections = HEAD_TIMEOUT_S, MAX_CONNECTIONS

    @classmethod
    def limited(cls, head_timeout_s: float, max_connections: int) -> type["StrictProtocol"]:
        """This protocol with other limits (``uvicorn.Config(app, http=...)`` takes a class)."""
        return type(cls.__name__, (cls,), {"head_timeout_s": head_timeout_s, "max_connections": max_connections})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn = StrictConnection(h11.SERVER, self.config.h11_max_incomplete_event_size or MAX_HEAD)
        self.waiting_since: float | None = None  # loop time since which a request head is awaited
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        set_nodelay(transport)
        if sum(not c.transport.is_closing() for c in self.connections) > self.max_connections:
            waiting = [c for c in self.connections if c.waiting_since is not None and not c.transport.is_closing()]
            min(waiting, key=lambda c: c.waiting_since, default=self).transport.close()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._watch_head()

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_head()

    def _watch_head(self) -> None:
        """Start the head timer when the server begins waiting for a request head; stop it once it has one."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_timer is None:
            self.waiting_since = self.loop.time()
            self._head_timer = self.loop.call_later(self.head_timeout_s, self.transport.close)
        elif not waiting and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = self.waiting_since = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn's 400 (text/plain, Connection: close) carrying the JSON line the other errors have
        super().send_400_response(json.dumps({"error": f"malformed HTTP request: {self.conn.problem or msg}"}))


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on a connection. asyncio leaves Nagle's algorithm on for accepted sockets, and
    uvicorn writes a response's head and body separately: on a kept-alive connection the body then
    waits for the client's delayed ACK, 40 ms a request (measured at one client: 56-60 ms a request,
    13.6 ms with this)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (bound here, so a taken port fails at once and port 0's
    real port is known before serving)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=socket.SOMAXCONN)
    except OSError as e:
        raise ImgclassError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                            "pick another --port or --host") from None


class BackgroundServer:
    """``app`` on uvicorn (``StrictProtocol``) at ``host:port`` (port 0: any free one), served by a
    thread with its own event loop: the caller's thread goes on (a video pipeline, or a wait for
    Ctrl-C). ``close()`` stops it: open responses get ``timeout_graceful_shutdown`` seconds to end,
    then the thread, its executor's threads and the socket are gone.

    Args:
        name: what it serves, for the thread's name and the error when the port is taken.

    Example:
        >>> app = page_app(routes, "127.0.0.1")  # doctest: +SKIP
        >>> with BackgroundServer(app, "127.0.0.1", 0, "live view") as server:  # doctest: +SKIP
        ...     print(server.url)
        http://127.0.0.1:40123/
    """

    def __init__(self, app: ASGIApp, host: str, port: int, name: str):
        try:
            self.socket = listen(host, port)
        except ImgclassError as e:
            raise ImgclassError(f"{name}: {e}") from None
        self.host, self.port = self.socket.getsockname()[:2]
        # No logging config of uvicorn's own: this process's logging belongs to its owner.
        config = uvicorn.Config(app, http=StrictProtocol, lifespan="off", log_config=None, access_log=False,
                                server_header=False, timeout_keep_alive=5, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        # Connections queue in the socket's backlog until the loop is up: nothing to wait for here.
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True,
                                        name=f"imgclass-{name.replace(' ', '-')}")
        self._thread.start()

    async def _serve(self) -> None:
        # asyncio.run joins the default executor's threads when the server returns
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(PAGE_THREADS, thread_name_prefix=f"{self._thread.name}-worker"))
        await self._server.serve(sockets=[self.socket])

    @property
    def url(self) -> str:
        host = self.host
        if host in EVERY_ADDRESS:  # listening everywhere: name this machine, not "any address"
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C interrupts the wait)."""
        self._thread.join()

    def close(self) -> None:
        """Stop serving and wait for the server's thread to end (idempotent)."""
        self._server.should_exit = True
        self._thread.join()
        self.socket.close()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def run_blocking(fn: Callable, *args):
    """``fn(*args)`` in the server's executor threads, so the event loop goes on answering."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def mjpeg_response(latest: Callable[[int], tuple[int, bytes | None]], running: Callable[[], bool]) -> StreamingResponse:
    """A multipart/x-mixed-replace stream of JPEGs until ``running()`` turns false or the viewer
    leaves. ``latest(seq)`` waits a little (in the executor, off the event loop) for a frame newer
    than ``seq`` and returns ``(its seq, its JPEG)``, or ``(seq, None)`` when none came.

    Example:
        >>> mjpeg_response(lambda seq: feed.jpeg(after=seq, timeout=0.5), lambda: not stopped)  # doctest: +SKIP
    """
    async def parts() -> AsyncIterator[bytes]:
        seq = 0
        while running():
            new, jpeg = await run_blocking(latest, seq)
            if jpeg is not None and new != seq:
                seq = new
                yield (f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                       .encode() + jpeg + b"\r\n")

    return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
                             headers={"Cache-Control": "no-store"})
