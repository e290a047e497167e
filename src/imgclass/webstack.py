"""What imgclass's ASGI web servers share (``imgclass serve`` now; the capture page and the live view
later): one middleware for what request bodies may cost, and the check that keeps other web sites'
pages away from the routes a browser uses.

A server that buffers request bodies can be made to hold memory by clients that send slowly, or
that send many large bodies at once: ``RequestLimits`` bounds each body, all bodies in flight
together, and how long a body may stall. ``SameSite`` refuses what a foreign page can make a
browser send: a Host that is not one of the server's names (DNS rebinding: evil.example resolving
to this machine would make its page same-origin with the server), or another site's Origin.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MB = 2 ** 20
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_ADDRESS = ("0.0.0.0", "::", "")


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

    Example:
        >>> app = RequestLimits(app, max_body_mb=20, max_inflight_mb=256, body_timeout_s=30)  # doctest: +SKIP
    """

    def __init__(self, app: ASGIApp, max_body_mb: float, max_inflight_mb: float, body_timeout_s: float):
        self.app, self.timeout_s = app, body_timeout_s
        largest = min(max_body_mb, max_inflight_mb)
        self.max_body, self.budget = round(largest * MB), round(max_inflight_mb * MB)
        self.too_large = f"request body over {largest:g} MB, the server's limit"
        self.busy = f"server busy: request bodies in flight fill its {max_inflight_mb:g} MB; retry shortly"
        self.in_flight = 0  # bytes reserved by the requests under way

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
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
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            reserve(int(length) if length.isascii() and length.isdigit() else 0)
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
