"""``imgclass serve`` against hostile requests: odd header values and deep JSON (one-line 400s)."""
from __future__ import annotations

import asyncio
import base64
import json

from test_serve import INFER, client, jpegs, triton_request  # noqa: F401

from imgclass.serve import oip

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
