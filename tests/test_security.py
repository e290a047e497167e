"""The local web servers (capture on 8090, the live view on 8080) against hostile clients: request
smuggling in a refused POST's body or a folded header, foreign origins, bad Content-Length, DNS
rebinding (also listening on every address), 100-continue before the checks, connection bursts and
stalled connections, NUL bytes, huge URLs, decompression bombs, and fuzzed bytes. Real servers on
127.0.0.1, raw sockets."""
from __future__ import annotations

import io
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

from imgclass.capture import CaptureApp, CaptureServer, Dataset, LiveFeed
from imgclass.capture.server import create_app
from imgclass.media.liveview import LiveView
from imgclass.webstack import BackgroundServer

try:
    import resource
except ImportError:  # Windows: no file-descriptor limit to lower
    resource = None

FUZZ_EXAMPLES = int(os.environ.get("IMGCLASS_FUZZ_EXAMPLES", "50"))


class Frame:
    def __init__(self, image: np.ndarray, timestamp: float):
        self.image, self.timestamp = image, timestamp


def synthetic_app(root: Path) -> CaptureApp:
    """A capture app on an endless synthetic feed (frames at 30 fps)."""
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    frames = (Frame(image, i / 30) for i in range(10_000))
    app = CaptureApp(Dataset(root / "ds"), LiveFeed(frames), source_name="synthetic", model_dir=root / "model")
    app.feed.wait(timeout=10)  # a busy machine may not have run the feed's thread yet
    return app


@pytest.fixture
def server(tmp_path):
    with CaptureServer(synthetic_app(tmp_path), "127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture
def view():
    live = LiveView(port=0)
    live.write(np.zeros((24, 32, 3), np.uint8))
    yield live
    live.close()


def port_of(server: CaptureServer | LiveView) -> int:
    return urlsplit(server.url).port


def exchange(port: int, data: bytes, sock: socket.socket | None = None) -> bytes:
    """Send raw bytes on one connection (``sock``, made ahead, or a new one); everything the server
    answers until it closes."""
    if sock is not None:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
    with sock or socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request_bytes(method: str, path: str, port: int, body: bytes = b"", headers: dict | None = None,
                  close: bool = True) -> bytes:
    """The bytes of one HTTP/1.1 request (Host and Content-Length filled in unless given)."""
    fields = {"Host": f"127.0.0.1:{port}", **({"Content-Length": str(len(body))} if body or method == "POST" else {}),
              **(headers or {}), **({"Connection": "close"} if close else {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("latin-1") + body


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


def json_body(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def capture_one(server: CaptureServer) -> Path:
    port = port_of(server)
    answer = exchange(port, request_bytes("POST", "/api/capture?set=train&class=cup", port, headers={"X-Imgclass": "1"}))
    assert statuses(answer) == [200], answer
    (path,) = (server.app.dataset.root / "train" / "cup").iterdir()
    return path


def smuggled_undo(port: int) -> bytes:
    """What a cross-site page can put in a text/plain POST body: a whole second request."""
    return request_bytes("POST", "/api/undo", port, headers={"X-Imgclass": "1"}, close=False)


# --- a refused request's body is never read as the next request -----------------------------
def test_a_refused_post_cannot_smuggle_a_second_request(server):
    saved, port = capture_one(server), port_of(server)
    forged = request_bytes("POST", "/api/capture?set=train&class=cup", port, smuggled_undo(port),
                           {"Content-Type": "text/plain", "Origin": "http://evil.example"}, close=False)
    answer = exchange(port, forged + request_bytes("GET", "/api/state", port))  # the connection stays usable
    assert statuses(answer) == [403, 200], answer
    assert json.loads(answer.rsplit(b"\r\n\r\n", 1)[1])["counts"]["train"]["cup"] == 1
    assert saved.exists()


def test_a_refused_post_with_a_large_body_closes_the_connection(server):
    saved, port = capture_one(server), port_of(server)
    body = smuggled_undo(port) * 1000  # ~75 kB: not worth reading, so the server hangs up instead
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request_bytes("POST", "/api/undo", port, body, {"Content-Type": "text/plain"}, close=False))
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may hang up before all is sent; its answer is still there to read
        head = list(iter(sock.makefile("rb").readline, b"\r\n"))  # only the head: the hang-up may reset the rest
    assert statuses(head[0]) == [403] and b"connection: close\r\n" in map(bytes.lower, head)
    answer = exchange(port, request_bytes("GET", "/api/state", port))
    assert json_body(answer)["counts"]["train"]["cup"] == 1 and saved.exists()


# --- Origin, Content-Length ------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1:{port}"])
def test_a_post_from_another_origin_is_refused(server, origin):
    port = port_of(server)
    answer = exchange(port, request_bytes("POST", "/api/class", port, b'{"name": "cup"}',
                                          {"X-Imgclass": "1", "Origin": origin.format(port=port)}))
    assert statuses(answer) == [403] and "origin" in json_body(answer)["error"].lower()
    assert server.app.dataset.classes == []


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "HTTP://127.0.0.1:{port}", None])
def test_a_post_from_the_page_itself_is_served(server, origin):
    port = port_of(server)
    headers = {"X-Imgclass": "1", **({"Origin": origin.format(port=port)} if origin else {})}
    answer = exchange(port, request_bytes("POST", "/api/class", port, b'{"name": "cup"}', headers))
    assert statuses(answer) == [200] and server.app.dataset.classes == ["cup"]


@pytest.mark.parametrize("length", ["-1", "abc", "1_0", "+5", " ", "5, 5"])
def test_a_bad_content_length_is_400(server, length):
    port = port_of(server)
    bad = request_bytes("POST", "/api/undo", port, headers={"X-Imgclass": "1", "Content-Length": length})
    answer = exchange(port, bad + b"abcde")
    assert statuses(answer) == [400] and "Content-Length" in json_body(answer)["error"]


def test_a_chunked_or_oversized_body_is_refused_and_the_connection_closed(server):
    port = port_of(server)
    chunked = request_bytes("POST", "/api/undo", port, close=False,
                            headers={"X-Imgclass": "1", "Transfer-Encoding": "chunked"})
    answer = exchange(port, chunked + b"0\r\n\r\n" + smuggled_undo(port))
    assert statuses(answer) == [400] and b"connection: close" in answer.lower()
    huge = request_bytes("POST", "/api/capture", port, headers={"X-Imgclass": "1", "Content-Length": str(1 << 40)})
    answer = exchange(port, huge)
    assert statuses(answer) == [413] and "too large" in json_body(answer)["error"]


# --- a folded header, 100-continue, listening on every address ------------------------------
def test_a_folded_header_line_is_400_and_never_a_second_request(server):
    saved, port = capture_one(server), port_of(server)
    smuggled = smuggled_undo(port)
    # h11 and http.server join " Content-Length: N" to the line above: the body would be the next request
    folded = (f"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: a\r\n"
              f" Content-Length: {len(smuggled)}\r\n\r\n").encode() + smuggled
    answer = exchange(port, folded)
    assert statuses(answer) == [400] and "folded header line" in json_body(answer)["error"]
    assert saved.exists()


def first_answer(port: int, head: bytes) -> tuple[bytes, socket.socket]:
    """Send a request head (no body yet) and read the first answer's head; the socket stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    return data, sock


@pytest.mark.parametrize("headers, status", [({"Origin": "http://evil.example"}, 403), ({"X-Imgclass": "0"}, 403),
                                             ({"Content-Length": str(1 << 40)}, 413)])
def test_a_refused_request_never_gets_100_continue(server, headers, status):
    port = port_of(server)
    head = request_bytes("POST", "/api/class", port, headers={"X-Imgclass": "1", "Content-Length": "15",
                                                              "Expect": "100-continue", **headers}, close=False)
    answer, sock = first_answer(port, head)
    sock.close()
    assert statuses(answer) == [status], answer
    assert server.app.dataset.classes == []


def test_an_accepted_request_gets_100_continue_then_its_answer(server):
    port = port_of(server)
    body = b'{"name": "cup"}'
    head = request_bytes("POST", "/api/class", port, headers={"X-Imgclass": "1", "Content-Length": str(len(body)),
                                                              "Expect": "100-continue"})
    answer, sock = first_answer(port, head)
    with sock:
        assert statuses(answer) == [100], answer
        sock.sendall(body)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert statuses(answer) == [200] and server.app.dataset.classes == ["cup"]


def test_listening_on_every_address_refuses_dns_rebinding(tmp_path):
    """``capture --host 0.0.0.0``'s rules (bound to 127.0.0.1 here): a page of evil.example, a name
    resolving to this machine, may not add a class; this machine's own name may."""
    app = synthetic_app(tmp_path)
    with BackgroundServer(create_app(app, "0.0.0.0"), "127.0.0.1", 0, "capture page") as server:
        port, add_cup = server.port, b'{"name": "cup"}'
        for name, status in [("evil.example", 403), (socket.gethostname(), 200)]:
            headers = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}", "X-Imgclass": "1"}
            answer = exchange(port, request_bytes("POST", "/api/class", port, add_cup, headers))
            assert statuses(answer) == [status], answer
            assert app.dataset.classes == ([] if status == 403 else ["cup"])
    app.close()


# --- many connections at once ----------------------------------------------------------------
def test_a_burst_of_200_connections_is_all_answered(tmp_path):
    somaxconn = Path("/proc/sys/net/core/somaxconn")  # Linux caps every listen queue at it
    if somaxconn.exists() and int(somaxconn.read_text()) < 200:
        pytest.skip(f"net.core.somaxconn is {somaxconn.read_text().strip()}: no listen queue holds 200 here")
    with CaptureServer(synthetic_app(tmp_path), "127.0.0.1", 0) as server:
        port = port_of(server)
        clients = [socket.socket() for _ in range(200)]
        try:
            with selectors.DefaultSelector() as selector:  # all at once: more than the loop accepts in one go
                for client in clients:
                    client.setblocking(False)
                    client.connect_ex(("127.0.0.1", port))
                    selector.register(client, selectors.EVENT_WRITE)
                connected: set[socket.socket] = set()
                while len(connected) < len(clients) and (ready := selector.select(timeout=3)):
                    for key, _ in ready:
                        selector.unregister(key.fileobj)
                        connected.add(key.fileobj)
            assert len(connected) == 200, f"only {len(connected)} of 200 connections got through"

            def get(client: socket.socket) -> list[int]:
                client.setblocking(True)
                client.settimeout(20)
                client.sendall(request_bytes("GET", "/api/state", port))
                return statuses(b"".join(iter(lambda: client.recv(65536), b"")))

            with ThreadPoolExecutor(50) as pool:
                answers = list(pool.map(get, clients))
            assert answers == [[200]] * 200
        finally:
            for client in clients:
                client.close()


STALLER = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
sys.stdin.readline()
held = []
for i in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        if i % 2:  # half a request head, then silence
            sock.sendall(b"GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n")
    except OSError:
        pass  # the server already let this one go
    held.append(sock)
print("stalled", flush=True)
sys.stdin.readline()
"""
STALLED = 300
HEADROOM = 240  # files this process may still open: over the server's connection bound, under STALLED


@pytest.mark.skipif(resource is None or not Path("/proc/self/fd").exists(), reason="needs Linux's RLIMIT_NOFILE")
def test_the_page_answers_while_300_stalled_connections_wait(server):
    """`ulimit -n` reached by stalled connections locked the page out until they closed."""
    port = port_of(server)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # A child process holds the stalled sockets: its own descriptors, under the limit it starts with.
    staller = subprocess.Popen([sys.executable, "-c", STALLER, str(port), str(STALLED)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    # The page's visitor is another process in life; here it shares this one's descriptors with the
    # server, so its socket is made before the stalled connections can use them all up.
    probe = socket.socket()
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + HEADROOM, hard))
        staller.stdin.write("go\n")
        staller.stdin.flush()
        assert staller.stdout.readline() == "stalled\n"
        start = time.monotonic()
        answer = exchange(port, request_bytes("GET", "/api/state", port), probe)
        assert statuses(answer) == [200] and time.monotonic() - start < 5
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        staller.kill()
        staller.communicate()


# --- DNS rebinding: the live view checks Host like capture does ------------------------------
@pytest.mark.parametrize("path", ["/", "/frame.jpg", "/stream.mjpg", "/status"])
def test_the_live_view_refuses_other_host_names(view, path):
    port = port_of(view)
    answer = exchange(port, request_bytes("GET", path, port, headers={"Host": f"evil.example:{port}"}))
    assert statuses(answer) == [403] and b"evil.example" in answer
    answer = exchange(port, request_bytes("GET", "/status", port, headers={"Host": f"localhost:{port}"}))
    assert statuses(answer) == [200]


# --- NUL bytes, huge URLs, decompression bombs: 400, no traceback ----------------------------
NASTY_PATHS = ["/api/image?path=a%00b", "/api/state%00", "/a\x00b", "/api/image?path=" + "a" * 10_000, "/" + "a" * 10_000,
               "/api/image?path=" + "/".join(["a" * 200] * 30)]
LONG_FILE_NAME = "/api/image?path=" + "a" * 3000  # a short enough URL, but no file name is that long


@pytest.mark.parametrize("target, paths", [("server", [*NASTY_PATHS, LONG_FILE_NAME]), ("view", NASTY_PATHS)])
def test_nul_bytes_and_huge_paths_are_400_without_a_traceback(request, target, paths, caplog, capfd):
    port = port_of(request.getfixturevalue(target))
    for path in paths:
        answer = exchange(port, request_bytes("GET", path, port))
        assert statuses(answer) == [400], (path[:40], answer[:300])
        assert len(json_body(answer)["error"]) < 120
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert "Traceback" not in capfd.readouterr().err


def jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny JPEG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("size", [(65_000, 65_000), (9000, 9000)])
def test_decompression_bombs_are_400_without_a_traceback(server, size, caplog, capfd):
    port = port_of(server)
    answer = exchange(port, request_bytes("POST", "/api/capture?set=train&class=cup", port, jpeg_claiming(*size),
                                          {"X-Imgclass": "1", "Content-Type": "image/jpeg"}))
    assert statuses(answer) == [400], answer
    error = json_body(answer)["error"]
    assert "too large" in error and len(error) < 120
    assert not (server.app.dataset.root / "train").exists() and server.app.dataset.classes == []
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert "Traceback" not in capfd.readouterr().err


# --- fuzzed bytes: a 4xx, a valid answer, or (incomplete) a closed connection; never a 500 -----
@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    with CaptureServer(synthetic_app(tmp_path_factory.mktemp("fuzz")), "127.0.0.1", 0) as srv:
        yield srv


FUZZ_PORT = 1  # each example's Host port; the server takes any port of its own names
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="/"), max_size=30)
HEADER_VALUES = {
    "Host": st.sampled_from(["127.0.0.1", "localhost:8090", "evil.example", "", "[::1]:1", "a.localhost"]) | TEXT,
    "Origin": st.sampled_from(["http://127.0.0.1:1", "null", "http://evil.example"]) | TEXT,
    "Content-Length": st.integers(0, 1 << 41).map(str) | TEXT,
    "Transfer-Encoding": st.sampled_from(["chunked", "gzip, chunked", "identity"]) | TEXT,
    "Expect": st.sampled_from(["100-continue"]) | TEXT,
    "X-Imgclass": st.sampled_from(["1", "0"]) | TEXT,
    "Content-Type": st.sampled_from(["image/jpeg", "application/json", "text/plain"]) | TEXT,
}
PATHS = ["/", "/app.js", "/api/state", "/api/image?path=train/cup/x.jpg", "/api/predict", "/api/class",
         "/api/capture?set=train&class=cup", "/api/undo", "/nope", "*", "/api/capture?quality=x"]


@st.composite
def fuzzed_requests(draw) -> tuple[bytes, bool]:
    """A request with fuzzed method, target, headers and body (maybe a whole second request), ending
    with ``Connection: close``: a second answer would mean its body was parsed as a request."""
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS"]) | TEXT)
    target = draw(st.sampled_from(PATHS) | TEXT.map(lambda t: "/" + t.replace(" ", "")))
    names = draw(st.lists(st.sampled_from(sorted(HEADER_VALUES)), max_size=6))
    headers = "".join(f"{name}: {draw(HEADER_VALUES[name])}\r\n" for name in names)
    body = draw(st.sampled_from([b"", b'{"name": "cup"}', smuggled_undo(FUZZ_PORT)]) | st.binary(max_size=64))
    return f"{method} {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n".encode() + body, True


@st.composite
def mangled_requests(draw) -> tuple[bytes, bool]:
    """A valid request with a stretch replaced by random bytes, or cut short (which may leave
    another request, or none, after it: no bound on its answers)."""
    valid = request_bytes("POST", "/api/class", FUZZ_PORT, b'{"name": "cup"}', {"X-Imgclass": "1"})
    start = draw(st.integers(0, len(valid)))
    end = draw(st.integers(start, len(valid)))
    return valid[:start] + draw(st.binary(max_size=12)) + (valid[end:] if draw(st.booleans()) else b""), False


def answer_to(port: int, data: bytes) -> bytes:
    """All the server answers to ``data`` until it closes the connection or is silent for 0.5 s."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass  # silence: an incomplete request the server still waits for; a reset: it hung up
    return b"".join(chunks)


@seed(20261207)
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.tuples(st.binary(max_size=300), st.just(True)) | fuzzed_requests() | mangled_requests())
def test_any_bytes_get_a_4xx_a_valid_answer_or_a_closed_connection(fuzz_server, case):
    data, one_request = case
    codes = [code for code in statuses(answer_to(port_of(fuzz_server), data)) if code >= 200]  # not 100 Continue
    assert all(code < 500 for code in codes), (data, codes)
    assert len(codes) <= 1 or not one_request, (data, codes)
