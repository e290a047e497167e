"""``imgclass serve`` against hostile requests: odd header values and deep JSON (one-line 400s), an API
key beyond ASCII, what a foreign web page can make a browser send (403), bodies that are too large,
too many at once or stalled (webstack.RequestLimits), and Hypothesis fuzzing of the Open Inference
Protocol code and of the app. IMGCLASS_FUZZ_EXAMPLES raises the fuzzers' example counts."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from test_serve import (INFER, client, jpegs, post_image, serve_process, serving, triton_request,  # noqa: F401
                        uvicorn_thread)

hypothesis = pytest.importorskip("hypothesis", reason="needs hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

from imgclass.classifier import Prediction  # noqa: E402
from imgclass.errors import ImgclassError  # noqa: E402
from imgclass.serve import Settings, create_app  # noqa: E402
from imgclass.serve import oip  # noqa: E402
from imgclass.webstack import MB, RequestLimits, RequestRefused, SameSite  # noqa: E402


def nest(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


def image_input(data, shape=(1,)) -> dict:
    return {"name": "images", "datatype": "BYTES", "shape": list(shape), "data": data}


def fake_receive(chunks: list[bytes], stall: bool = False):
    """An ASGI receive that delivers ``chunks``, then (``stall``) never sends the rest, or never disconnects."""
    messages = [{"type": "http.request", "body": c, "more_body": stall or i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()

    return receive


async def asgi_post(app, chunks: list[bytes], declared: int | None = None, stall: bool = False,
                    path: str = "/", headers: tuple = ()) -> tuple[int, dict, dict]:
    """POST ``chunks`` to an ASGI app (with Content-Length ``declared``, if given); its status, headers
    and JSON (before any binary tensors)."""
    sent = []

    async def send(message):
        sent.append(message)

    fields = [*headers, *([(b"content-length", str(declared).encode())] if declared is not None else [])]
    path, _, query = path.partition("?")
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": query.encode(), "root_path": "", "headers": fields,
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}
    await asyncio.wait_for(app(scope, fake_receive(chunks, stall), send), 30)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], head, json.loads(body[:int(head.get(oip.HEADER_LENGTH, len(body)))])


def raw_post(client, path: str, body: bytes, *headers: tuple[bytes, bytes]) -> tuple[int, dict, dict]:
    """POST to the client's app in its event loop, with header values as the bytes given (TestClient
    would send them re-encoded as UTF-8)."""
    return client.portal.call(asgi_post, client.app, [body], len(body), False, path, headers)


# --- case 8: header values and nesting ------------------------------------------------------------

def test_a_non_ascii_digit_length_and_deep_json_are_one_line_400s(client, jpegs):
    good = base64.b64encode(jpegs["orange"]).decode()
    body, _ = triton_request([jpegs["orange"]])
    # '²' passes str.isdigit(), and int() refused it: a 500
    status, _, answer = raw_post(client, INFER, body, (b"inference-header-content-length", b"\xb2"))
    assert status == 400 and "Inference-Header-Content-Length is '²'" in answer["error"]
    cases = [
        (client.post(INFER, content=body, headers={"Inference-Header-Content-Length": "9" * 5000}),
         "Inference-Header-Content-Length is '99999"),
        # 500 deep parses, then flattening it hit the recursion limit (a 500 and ~3,000 log lines)
        (client.post(INFER, json={"inputs": [image_input(nest(good, 500))]}), "data nests deeper than its shape"),
        (client.post(INFER, content=b"[" * 100_000 + b"]" * 100_000), "nests too deeply"),
        (client.post(INFER, json={"inputs": [image_input(nest(good, 900), [1] * 900)]}), "at most 8 sizes"),
        (client.post(INFER, json={"inputs": [image_input([good])], "id": nest("r1", 900)}), "id is [[[[[["),
    ]
    for r, words in cases:
        error = r.json()["error"]
        assert r.status_code == 400 and words in error and "\n" not in error and len(error) < 300, r.text
    r = client.post(INFER, json={"inputs": [image_input([[good]], [1, 1])]})  # nested as deep as the shape: fine
    assert r.status_code == 200


# --- case 9: the API key, the network warning, Host and Origin -------------------------------------

def test_a_non_ascii_api_key_is_compared_as_utf8_bytes(classifier, jpegs):
    key = "clé-voilà"  # 'à' is C3 A0 in UTF-8: A0 read as latin-1 is a no-break space, which strip() took
    image = (b"content-type", b"image/jpeg")
    with serving(classifier, api_key=key) as client:
        assert raw_post(client, "/v1/classify", jpegs["orange"], image, (b"x-api-key", key.encode()))[0] == 200
        assert raw_post(client, "/v1/classify", jpegs["orange"], image,
                        (b"authorization", b"Bearer " + key.encode()))[0] == 200
        assert raw_post(client, "/v1/classify", jpegs["orange"], image, (b"x-api-key", key.encode("latin-1")))[0] == 401


def test_listening_on_every_address_without_a_key_warns_in_one_line(tmp_path):
    missing = str(tmp_path / "missing.onnx")  # the warning comes before the model loads: this one fails after it
    out = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "--model", missing)
    [warning] = [line for line in out.stderr.splitlines() if line.startswith("imgclass: warning:")]
    assert warning.startswith("imgclass: warning: listening on 0.0.0.0 without --api-key: anyone on the network")
    assert out.returncode == 1 and "missing.onnx" in out.stderr
    out = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "--model", missing, "--api-key", "k")
    assert out.returncode == 1 and "imgclass: warning:" not in out.stderr


def test_browser_routes_refuse_foreign_hosts_and_origins_api_clients_unchanged(client, jpegs):
    files = [("a", ("orange.jpg", jpegs["orange"], "image/jpeg"))]
    refused = [
        (client.get("/", headers={"host": "evil.example:8000"}), "host 'evil.example:8000' is not a name"),
        (client.post("/v1/classify", files=files, headers={"host": "evil.example", "origin": "http://evil.example"}),
         "host 'evil.example' is not a name"),  # DNS rebinding: same-origin, but by a foreign name
        (client.post("/v1/classify", files=files, headers={"origin": "http://evil.example"}), "another site"),
        (client.post("/v1/classify", files=files, headers={"origin": "null"}), "another site"),
    ]
    for r, words in refused:
        assert r.status_code == 403 and words in r.json()["error"], r.text
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "app.localhost", "testserver"):
        assert client.get("/", headers={"host": host}).status_code == 200, host
    assert client.post("/v1/classify", files=files, headers={"origin": "http://testserver"}).status_code == 200
    # No Origin, any Host: curl -F, tritonclient, by a name this server cannot know (a proxy's, a DNS alias);
    # a page on another site cannot send an image body without a CORS preflight, which fails here
    assert client.post("/v1/classify", files=files, headers={"host": "imgclass.internal"}).status_code == 200
    assert post_image(client, jpegs["orange"], host="imgclass.internal").status_code == 200
    body, headers = triton_request([jpegs["orange"]])
    assert client.post(INFER, content=body, headers={**headers, "host": "imgclass.internal"}).status_code == 200


def test_allowed_origins_and_this_machines_names(classifier, jpegs):
    files = [("a", ("orange.jpg", jpegs["orange"], "image/jpeg"))]
    proxy = {"host": "imgclass.example.com", "origin": "https://imgclass.example.com"}
    with serving(classifier, allow_origins=("https://imgclass.example.com",)) as client:
        assert client.get("/", headers={"host": proxy["host"]}).status_code == 200
        assert client.post("/v1/classify", files=files, headers=proxy).status_code == 200
    with pytest.raises(ImgclassError, match="--allow-origin takes origins"):
        create_app([classifier], Settings(allow_origins=("imgclass.example.com/page",)))
    assert socket.gethostname().lower() in SameSite("0.0.0.0").names
    assert socket.gethostname().lower() not in SameSite("127.0.0.1").names


# --- case 3: request limits (webstack.RequestLimits) ----------------------------------------------

def reading_app(gate: asyncio.Event | None = None):
    """An ASGI app that reads the whole body, waits for ``gate`` (if any), then answers the body's size."""
    async def app(scope, receive, send):
        size, more = 0, True
        while more:
            message = await receive()
            size, more = size + len(message.get("body", b"")), message.get("more_body", False)
        if gate is not None:
            await gate.wait()
        await JSONResponse({"size": size})(scope, receive, send)
    return app


async def until(condition) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


def test_bodies_in_flight_share_a_budget():
    async def scenario():
        gate = asyncio.Event()
        limits = RequestLimits(reading_app(gate), max_body_mb=1, max_inflight_mb=1000 / MB, body_timeout_s=10)
        first = asyncio.create_task(asgi_post(limits, [b"x" * 600], declared=600))
        await until(lambda: limits.in_flight == 600)  # reserved before the body was read, held while it waits
        status, headers, answer = await asgi_post(limits, [b"x" * 500], declared=500)
        assert (status, headers["retry-after"]) == (503, "1") and "server busy" in answer["error"]
        status, _, answer = await asgi_post(limits, [b"x" * 300] * 2)  # no Content-Length: counted as it comes
        assert status == 503 and limits.in_flight == 600
        status, _, answer = await asgi_post(limits, [b"x" * 1001], declared=1001)  # alone over the budget
        assert status == 413 and "over 0.000953674 MB" in answer["error"]
        gate.set()
        assert (await first)[0] == 200 and limits.in_flight == 0  # given back when the request ended
        status, _, answer = await asgi_post(limits, [b"x" * 400] * 2)
        assert (status, answer) == (200, {"size": 800})

    asyncio.run(scenario())


def test_a_stalled_body_gets_408_or_its_connection_closed():
    limits = RequestLimits(reading_app(), max_body_mb=1, max_inflight_mb=1, body_timeout_s=0.2)
    status, headers, answer = asyncio.run(asgi_post(limits, [b"x" * 100], declared=1000, stall=True))
    assert (status, headers["connection"]) == (408, "close") and "stalled (nothing for 0.2 s)" in answer["error"]
    assert limits.in_flight == 0

    async def answers_first(scope, receive, send):  # a response under way cannot become a 408
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()
        await receive()

    with pytest.raises(RequestRefused):
        asyncio.run(RequestLimits(answers_first, 1, 1, 0.2)(
            {"type": "http", "headers": []}, fake_receive([b"x"], stall=True), lambda message: asyncio.sleep(0)))


def test_serve_holds_no_stalled_bodies_past_its_budget_or_timeout(classifier):
    async def scenario(app):
        image = [(b"content-type", b"image/jpeg")]
        stalled = asyncio.create_task(asgi_post(app, [b"\xff\xd8"], 600, True, "/v1/classify", image))
        await until(lambda: limits.in_flight == 600)
        busy = await asgi_post(app, [b"\xff\xd8"], 600, False, "/v1/classify", image)
        return busy, await stalled

    with serving(classifier, max_body_mb=1000 / MB, max_inflight_mb=1000 / MB, body_timeout_s=0.3) as client:
        limits = client.app.middleware_stack
        while not isinstance(limits, RequestLimits):
            limits = limits.app
        busy, stalled = client.portal.call(scenario, client.app)
        assert busy[0] == 503 and "server busy" in busy[2]["error"]
        assert stalled[0] == 408 and "stalled" in stalled[2]["error"] and limits.in_flight == 0


def test_uvicorn_closes_a_stalled_upload_with_a_408(classifier, jpegs):
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(jpegs['orange'])}\r\n\r\n").encode()
    with uvicorn_thread(create_app([classifier], Settings(body_timeout_s=0.3))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as conn:
            conn.sendall(head + jpegs["orange"][:1000])  # and then nothing
            answer = conn.makefile("rb").read()  # to the end: the server hangs up after answering
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408") and b"connection: close" in status.lower()
    assert "stalled" in json.loads(body)["error"]


LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def answered(conn: socket.socket, request: bytes = LIVE) -> bytes:
    """Send ``request`` on a kept-alive connection; the status line of its answer."""
    conn.sendall(request)
    with conn.makefile("rb", buffering=0) as reader:  # unbuffered: nothing of the socket read past this answer
        status, *headers = iter(reader.readline, b"\r\n")
        length = next(int(line.split(b":")[1]) for line in headers if line.lower().startswith(b"content-length"))
        assert len(conn.recv(length, socket.MSG_WAITALL)) == length
    return status.strip()


def test_past_max_connections_the_one_waiting_longest_for_a_head_is_closed(classifier):
    """uvicorn bounds neither how long a request head may take nor how many connections stay open:
    stalled sockets used up the file descriptors. One connection over the cap closes the one that
    has waited longest for a head; busy ones and newer ones keep going."""
    from imgclass.webstack import StrictProtocol

    protocol = StrictProtocol.limited(head_timeout_s=60, max_connections=2)
    with uvicorn_thread(create_app([classifier]), http=protocol) as url:
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        with socket.create_connection(address, timeout=20) as stalled:
            stalled.sendall(LIVE[:30])  # half a head, then nothing
            with socket.create_connection(address, timeout=20) as kept:
                assert answered(kept) == b"HTTP/1.1 200 OK"  # now waiting for its next head: since later
                with socket.create_connection(address, timeout=20) as third:  # one too many
                    assert answered(third) == b"HTTP/1.1 200 OK"
                    assert stalled.recv(1) == b""  # it made room, well before its 60 s head timeout
                    assert answered(kept) == b"HTTP/1.1 200 OK"


def test_serve_closes_a_connection_that_sends_no_whole_head():
    """`imgclass serve --head-timeout`: a silent connection, and one that sends half a head, are closed
    (uvicorn held both for ever); a bad --max-connections is one line."""
    with serve_process("--head-timeout", "1") as (_, url, _):
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        with socket.create_connection(address, timeout=8) as silent, \
                socket.create_connection(address, timeout=8) as half:
            half.sendall(LIVE[:30])
            assert silent.recv(1) == b"" and half.recv(1) == b""  # by --head-timeout 1, not the default 10 s
    out = run_cli("serve", "--max-connections", "0")
    assert out.returncode == 1 and out.stderr.strip() == "imgclass: error: --max-connections must be >= 1"


# --- Hypothesis -----------------------------------------------------------------------------------

def fuzz(examples: int):
    """Hypothesis settings: a fixed seed; ``examples`` examples, or IMGCLASS_FUZZ_EXAMPLES if more."""
    return settings(max_examples=max(examples, int(os.environ.get("IMGCLASS_FUZZ_EXAMPLES") or 0)),
                    derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])


KEYS = ["inputs", "outputs", "parameters", "id", "name", "datatype", "shape", "data", "topk", "binary_data",
        "binary_data_output", "binary_data_size", "shared_memory_region", "classification"]
junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4), max_leaves=12)


rarely = st.sampled_from([False] * 7 + [True])  # True one time in eight


def mostly(good):
    """``good`` values, now and then anything JSON can hold."""
    return rarely.flatmap(lambda bad: junk if bad else good)


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


images = st.lists(st.binary(max_size=24) | st.just(tiny_png()), min_size=1, max_size=3)
outputs = st.lists(st.sampled_from(list(oip.OUTPUTS)), unique=True, min_size=1).flatmap(
    lambda names: st.tuples(*(st.tuples(st.just(n), st.booleans()) for n in names)))


DEEP = "deep\x00"  # stands for data nested 1,500 deep, written as text: json.dumps would recurse for it
# 1,500: Hypothesis runs a test with 2,000 stack frames to spare, so a recursion that fails at 600 in a
# server (the usual limit is 1,000) would pass here.
DEPTH = 1500


@st.composite
def infer_bodies(draw, valid: bool = False) -> tuple[bytes, str | None]:
    """An infer request body and its Inference-Header-Content-Length: as a client builds one, its JSON
    (``valid``: never) drawn astray, its data nested too deep or its length header wrong."""
    field = st.just if valid else lambda v: mostly(st.just(v))
    items = draw(images)
    binary = draw(st.booleans())
    tensor = {"name": draw(field("images")), "datatype": draw(field("BYTES")), "shape": draw(field([len(items)]))}
    data = [base64.b64encode(x).decode() for x in items]
    if binary:
        tensor["parameters"] = draw(field({"binary_data_size": len(oip.pack_bytes(items))}))
    else:  # as the shape says, or deeper
        tensor["data"] = draw(st.just(data) if valid else mostly(st.sampled_from([data, [data], [[data]], DEEP])))
    request = {"inputs": draw(field([tensor]))}
    chosen = [{"name": draw(field(n)), "parameters": draw(field({"binary_data": b}))} for n, b in draw(outputs)]
    for key, value in (("outputs", chosen), ("parameters", {"topk": draw(st.integers(1, 5))}),
                       ("id", draw(st.text(max_size=8)))):
        if draw(st.booleans()):
            request[key] = draw(field(value))
    head = json.dumps(request).replace(json.dumps(DEEP), "[" * DEPTH + json.dumps(data) + "]" * DEPTH).encode()
    tail, length = (oip.pack_bytes(items), str(len(head))) if binary else (b"", None)
    if not valid and draw(rarely):
        tail, length = draw(st.binary(max_size=16)), draw(st.none() | st.just(str(len(head))) | st.text(max_size=6))
    return head + tail, length


def parse_or_refuse(body: bytes, header_length: str | None) -> None:
    try:
        assert isinstance(oip.parse_infer_request(body, header_length), oip.InferRequest)
    except ImgclassError as e:
        assert "\n" not in str(e) and len(str(e)) < 500, str(e)


@fuzz(300)
@given(body=st.binary(max_size=300) | st.builds(bytes.__mul__, st.sampled_from([b"[", b'{"inputs":[']), st.just(5000)),
       header_length=st.none() | st.text(max_size=6) | st.integers(-5, 305).map(str))
def test_any_bytes_parse_or_raise_imgclass_error(body, header_length):
    parse_or_refuse(body, header_length)


@fuzz(300)
@given(request=infer_bodies())
def test_any_json_request_parses_or_raises_imgclass_error(request):
    parse_or_refuse(*request)


predictions = st.builds(Prediction, st.integers(0, 2 ** 63 - 1), st.text(st.characters(exclude_categories=["Cs"])),
                        st.floats(0, 1, width=32))


@fuzz(200)
@given(request=infer_bodies(valid=True), data=st.data())
def test_encoded_responses_read_back(request, data):
    req = oip.parse_infer_request(*request)
    k = data.draw(st.integers(1, 4))
    results = data.draw(st.lists(st.lists(predictions, min_size=k, max_size=k), min_size=len(req.images),
                                 max_size=len(req.images)))
    body, headers = oip.encode_infer_response("net", req, results)
    split = int(headers.get(oip.HEADER_LENGTH, len(body)))
    answer, tail = json.loads(body[:split]), body[split:]
    assert [o["name"] for o in answer["outputs"]] == [name for name, _ in req.outputs] and answer.get("id") == req.id
    flat = [p for row in results for p in row]
    expected = {"labels": [p.label for p in flat], "indices": [p.index for p in flat],
                "confidences": np.array([p.confidence for p in flat], np.float32).tolist()}
    for out in answer["outputs"]:
        assert out["shape"] == [len(results), k]
        if "data" in out:
            assert out["data"] == expected[out["name"]]
            continue
        size = out["parameters"]["binary_data_size"]
        raw, tail = tail[:size], tail[size:]
        if out["name"] == "labels":
            assert [x.decode() for x in oip.unpack_bytes(raw)] == expected["labels"]
        else:
            dtype = "<f4" if out["name"] == "confidences" else "<i8"
            assert np.frombuffer(raw, dtype).tolist() == expected[out["name"]]
    assert tail == b""


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=12)
content_types = st.sampled_from(["image/jpeg", "application/octet-stream", "application/json", "text/plain",
                                 "multipart/form-data; boundary=b0undary", "multipart/form-data"]) | header_text


@st.composite
def multipart(draw) -> bytes:
    parts = draw(st.lists(st.tuples(header_text, st.binary(max_size=24) | st.just(tiny_png())), max_size=3))
    body = b"".join(b'--b0undary\r\nContent-Disposition: form-data; name="f"; filename="' + name.encode("latin-1")
                    + b'"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n" for name, data in parts)
    return body + draw(st.sampled_from([b"--b0undary--\r\n", b""]))


@st.composite
def app_requests(draw) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    """A path, body and headers: a fuzzed infer request, or a fuzzed multipart or image body for
    /v1/classify; now and then with headers drawn astray."""
    if draw(st.booleans()):
        body, length = draw(infer_bodies())
        path, headers = INFER, {} if length is None else {"inference-header-content-length": length}
    else:
        body = draw(multipart() | st.binary(max_size=64) | st.just(tiny_png()))
        query = draw(st.sampled_from(["", "?topk=2", "?topk=x", "?threshold=2"]) | header_text.map("?".__add__))
        path, headers = "/v1/classify" + query, {"content-type": draw(content_types)}
    astray = st.dictionaries(st.sampled_from(["content-type", "inference-header-content-length", "origin", "host"]),
                             header_text, min_size=1, max_size=2)
    headers.update(draw(rarely.flatmap(lambda odd: astray if odd else st.just({}))))
    return path, body, [(k.encode(), v.encode()) for k, v in headers.items()]


@fuzz(150)
@given(request=app_requests())
def test_the_app_answers_random_requests_in_json_never_a_5xx(client, request):
    path, body, headers = request
    status, _, answer = raw_post(client, path, body, *headers)  # the JSON, before any binary tensors
    assert 200 <= status < 500, answer
    assert status < 400 or "\n" not in answer["error"]
