"""What imgclass's ASGI web servers share (``imgclass serve`` now; the capture page and the live view
later): the check that keeps other web sites' pages away from the routes a browser uses.

``SameSite`` refuses what a foreign page can make a browser send: a Host that is not one of the
server's names (DNS rebinding: evil.example resolving to this machine would make its page
same-origin with the server), or another site's Origin.
"""
from __future__ import annotations

import socket
from typing import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_ADDRESS = ("0.0.0.0", "::", "")


class SameSite:
    """Which browser requests a server bound to ``host`` takes: those naming it by one of its names
    (the loopback names, ``host`` itself, the address the connection came in on and, bound to every
    address, this machine's name and addresses), from its own page or one of ``allow_origins``
    (origins as ``origin_of`` accepts them, whose names count too).

    Example:
        >>> guard = SameSite("0.0.0.0", ["https://imgclass.example.com"])  # doctest: +SKIP
        >>> guard.refusal(scope)  # None, or why a 403
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
