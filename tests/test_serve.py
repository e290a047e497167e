"""``imgclass serve``: the REST route, the Open Inference Protocol v2 (with tritonclient, unchanged),
metrics, the API key, limits and errors, micro-batching, the upload page in Chromium, and a real
uvicorn process draining its requests on SIGTERM. Most tests run the app in-process (Starlette's
TestClient); two start ``imgclass serve`` as a subprocess."""
from __future__ import annotations

import asyncio
from asyncio import _get_running_loop as asyncio_running_loop
import base64
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="needs the serve extra (pip install -e '.[serve,test]')")
httpx = pytest.importorskip("httpx", reason="needs httpx (pip install -e '.[test]')")
triton = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (pip install -e '.[test]')")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import imgclass  # noqa: E402
from conftest import run_cli  # noqa: E402
from imgclass.classifier import result_record  # noqa: E402
from imgclass.serve import MicroBatcher, QueueFull, Settings, create_app  # noqa: E402
from imgclass.serve import oip as serve_oip  # noqa: E402
from test_runtime import BLUE, RED, tiny_onnx  # noqa: E402

MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def jpegs(images_dir) -> dict[str, bytes]:
    return {name: (images_dir / f"{name}_0.jpg").read_bytes() for name in ("orange", "banana")}


@contextmanager
def serving(classifier, **settings):
    """The app in-process (lifespan run: engines warmed, batch loop started) and a client to it."""
    app = create_app([classifier], Settings(**settings))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def client(classifier):
    with serving(classifier) as client:
        yield client


def post_image(client, data: bytes, query: str = "", **headers):
    return client.post(f"/v1/classify{query}", content=data, headers={"content-type": "image/jpeg", **headers})


# --- REST ----------------------------------------------------------------------------------------

def test_raw_image_answers_what_classify_json_prints(client, classifier, images_dir, jpegs):
    r = post_image(client, jpegs["orange"], "?topk=3")
    assert r.status_code == 200
    [(_, offline, _)] = classifier.classify_files([images_dir / "orange_0.jpg"], topk=3)
    assert r.json().keys() == result_record("body", offline).keys() == {"input", "predictions"}
    served = r.json()["predictions"]
    assert [p["index"] for p in served] == [p.index for p in offline] and served[0]["label"] == "orange"
    assert np.allclose([p["confidence"] for p in served], [p.confidence for p in offline], atol=1e-5)
    assert post_image(client, jpegs["banana"], "?threshold=1").json()["predictions"] == []


def test_a_trained_onnx_model_is_served_under_its_own_name(tmp_path):
    (tmp_path / "labels.txt").write_text("red\nblue\n")
    net = imgclass.Classifier(model=tiny_onnx(tmp_path / "colours.onnx", [[5, -5], [0, 0], [-5, 5]]),
                              labels=tmp_path / "labels.txt")
    pngs = []
    for pixels in (RED, BLUE):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    with serving(net) as client:
        r = client.post("/v1/classify?topk=2", content=pngs[1], headers={"content-type": "image/png"})
        assert [p["label"] for p in r.json()["predictions"]] == ["blue", "red"]
        assert client.get("/v2/models/colours").json()["name"] == "colours"
        body, headers = triton_request(pngs)
        result = triton_result(client.post("/v2/models/colours/infer", content=body, headers=headers))
        assert result.as_numpy("labels")[:, 0].tolist() == [b"red", b"blue"]


def test_multipart_several_images_a_bad_one_reported_in_place(client, jpegs):
    files = [("a", ("orange.jpg", jpegs["orange"], "image/jpeg")), ("b", ("notes.jpg", b"not a jpeg", "image/jpeg")),
             ("c", ("banana.jpg", jpegs["banana"], "image/jpeg"))]
    r = client.post("/v1/classify?topk=2", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["input"] for x in results] == ["orange.jpg", "notes.jpg", "banana.jpg"]
    assert results[0]["predictions"][0]["label"] == "orange" and len(results[0]["predictions"]) == 2
    assert results[1] == {"input": "notes.jpg", "error": "notes.jpg: not an image, or a format Pillow cannot read"}
    assert results[2]["predictions"][0]["label"] == "banana"
    r = client.post("/v1/classify", files=[files[1]])
    assert r.status_code == 400 and r.json()["error"].startswith("notes.jpg: not an image")


def test_bad_requests_get_one_json_line_and_the_server_carries_on(client, jpegs):
    cases = [
        (post_image(client, b"\x00garbage"), 400, "body: not an image"),
        (post_image(client, jpegs["orange"][:2000]), 400, "body: corrupt or truncated image"),
        (post_image(client, b""), 400, "empty request body"),
        (post_image(client, jpegs["orange"], "?topk=0"), 400, "topk must be"),
        (post_image(client, jpegs["orange"], "?threshold=7"), 400, "threshold within 0..1"),
        (client.post("/v1/classify", content=b"{}", headers={"content-type": "application/json"}), 415, "Content-Type application/json"),
        (client.post("/v1/classify", files={"note": (None, "no file")}), 400, "holds no file"),
        (client.get("/v1/classify"), 405, "Method Not Allowed"),
        (client.get("/nowhere"), 404, "Not Found"),
    ]
    for r, status, words in cases:
        assert (r.status_code, r.headers["content-type"]) == (status, "application/json"), r.text
        assert words in r.json()["error"], r.json()
    assert post_image(client, jpegs["orange"]).json()["predictions"][0]["label"] == "orange"


def test_body_over_the_limit_gets_413_declared_or_streamed(classifier, jpegs):
    with serving(classifier, max_body_mb=0.001) as client:
        declared = post_image(client, jpegs["orange"])
        streamed = client.post("/v1/classify", content=iter([jpegs["orange"][:600], jpegs["orange"][600:]]),
                               headers={"content-type": "image/jpeg"})
        for r in (declared, streamed):
            assert r.status_code == 413 and "over 0.001 MB" in r.json()["error"]
        assert post_image(client, b"\xff\xd8tiny").status_code == 400  # small bodies still get in


# --- batching, the bounded queue ------------------------------------------------------------------

@contextmanager
def gated_engine(monkeypatch, classifier):
    """The engine blocks on its next batch until ``gate.set()``; ``sizes`` lists every batch it ran."""
    gate, entered, sizes, run = threading.Event(), threading.Event(), [], classifier.engine.run

    def gated(batch):
        sizes.append(len(batch))
        entered.set()
        gate.wait(30)
        return run(batch)

    monkeypatch.setattr(classifier.engine, "run", gated)
    try:
        yield gate, entered, sizes
    finally:
        gate.set()


def wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_concurrent_requests_share_a_batch(classifier, monkeypatch, jpegs):
    with serving(classifier, max_batch=8) as client, ThreadPoolExecutor(6) as pool, \
            gated_engine(monkeypatch, classifier) as (gate, entered, sizes):
        batcher = client.app.state.service.batcher
        first = pool.submit(post_image, client, jpegs["orange"])
        assert entered.wait(30)  # the engine holds the first image...
        names = ["banana", "orange", "banana", "orange", "banana"]
        rest = [pool.submit(post_image, client, jpegs[n]) for n in names]
        wait_until(lambda: batcher.queued == 5)  # ...while five more queue up behind it
        gate.set()
        assert first.result().json()["predictions"][0]["label"] == "orange"
        assert [f.result().json()["predictions"][0]["label"] for f in rest] == names
        assert sizes == [1, 5]
        metrics = scrape(client)
        assert metrics["imgclass_batch_size_count"] == 2 and metrics["imgclass_batch_size_sum"] == 6


def test_full_queue_answers_503_with_retry_after(classifier, monkeypatch, jpegs):
    with serving(classifier, max_batch=1, max_queue=1) as client, ThreadPoolExecutor(1) as pool, \
            gated_engine(monkeypatch, classifier) as (gate, entered, _):
        held = pool.submit(post_image, client, jpegs["orange"])
        assert entered.wait(30)
        r = post_image(client, jpegs["banana"])
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "server busy" in r.json()["error"]
        two = client.post("/v1/classify", files=[("a", ("a.jpg", jpegs["orange"])), ("b", ("b.jpg", jpegs["banana"]))])
        assert two.status_code == 413 and "at most 1 (--max-queue)" in two.json()["error"]
        gate.set()
        assert held.result().status_code == 200
        assert post_image(client, jpegs["banana"]).status_code == 200  # room again


def test_batcher_caps_batches_waits_only_for_images_on_their_way_and_survives_errors():
    sizes = []

    def engine(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        if (batch < 0).any():
            raise RuntimeError("engine failed")
        return batch.reshape(len(batch), -1)[:, :1] * 2

    async def scenario():
        batcher = MicroBatcher([engine], max_batch=4, timeout_s=30, max_queue=16)
        await batcher.start()
        inputs = [np.full((1,), i, np.float32) for i in range(10)]
        with batcher.admit(10) as ticket:  # ten at once: batches of at most 4, answers in order
            rows = await ticket.infer(inputs)
        assert [float(r[0]) for r in rows] == [2.0 * i for i in range(10)] and sizes == [4, 4, 2]
        sizes.clear()
        with batcher.admit(1) as lone:  # nothing else on its way: no 30 s wait
            assert float((await asyncio.wait_for(lone.infer([inputs[3]]), 10))[0][0]) == 6.0
        sizes.clear()

        async def late(ticket, x):  # admitted now, decoded a little later: the open batch waits for it
            await asyncio.sleep(0.05)
            return await ticket.infer([x])

        with batcher.admit(1) as a, batcher.admit(1) as b:
            await asyncio.wait_for(asyncio.gather(a.infer([inputs[1]]), late(b, inputs[2])), 10)
        assert sizes == [2]
        with batcher.admit(1) as bad:
            with pytest.raises(RuntimeError, match="engine failed"):
                await bad.infer([np.full((1,), -1, np.float32)])
        with batcher.admit(16):
            with pytest.raises(QueueFull):
                with batcher.admit(1):
                    pass
        assert batcher.in_flight == 0 and batcher.decoding == 0
        with batcher.admit(1) as again:  # still serving after the failure
            assert float((await again.infer([inputs[5]]))[0][0]) == 10.0
        await batcher.stop()

    asyncio.run(scenario())


# --- Open Inference Protocol v2 --------------------------------------------------------------------

def triton_request(images: list[bytes], outputs=None, parameters=None, binary: bool = True):
    """An infer request body encoded by tritonclient itself, and its headers."""
    tensor = triton.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs, parameters=parameters)
    return body, {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}


def triton_result(response):
    length = response.headers.get("inference-header-content-length")
    return triton.InferenceServerClient.parse_response_body(response.content, header_length=length and int(length))


def test_oip_metadata_health_and_binary_infer_read_by_tritonclient(client, jpegs):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("labels", "BYTES"), ("confidences", "FP32"),
                                                                     ("indices", "INT64")]
    body, headers = triton_request([jpegs["orange"], jpegs["banana"]], parameters={"topk": 3})
    r = client.post(INFER, content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    result = triton_result(r)
    labels, confidences, indices = (result.as_numpy(n) for n in ("labels", "confidences", "indices"))
    assert labels.shape == confidences.shape == indices.shape == (2, 3)
    assert [labels[0, 0], labels[1, 0]] == [b"orange", b"banana"] and indices[0, 0] == 950
    assert confidences.dtype == np.float32 and indices.dtype == np.int64
    assert (np.diff(confidences, axis=1) <= 0).all() and 0 < confidences[0, 0] <= 1
    rest = post_image(client, jpegs["orange"], "?topk=3").json()["predictions"]
    assert np.allclose(confidences[0], [p["confidence"] for p in rest], atol=1e-6)


def test_oip_json_tensors_both_ways(client, jpegs):
    request = {"id": "r1", "parameters": {"topk": 2},
               "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1, 1],
                           "data": [[base64.b64encode(jpegs["banana"]).decode()]]}],
               "outputs": [{"name": "labels"}, {"name": "indices"}]}
    r = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=request)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    answer = r.json()
    assert (answer["id"], answer["model_name"]) == ("r1", MODEL)
    assert [o["name"] for o in answer["outputs"]] == ["labels", "indices"]
    assert answer["outputs"][0]["shape"] == [1, 2] and answer["outputs"][0]["data"][0] == "banana"
    assert answer["outputs"][1]["data"][0] == 954


def test_oip_errors_are_400_json_naming_the_problem(client, jpegs):
    good = base64.b64encode(jpegs["orange"]).decode()

    def infer_json(inputs, path=INFER, **extra):
        return client.post(path, json={"inputs": inputs, **extra})

    body, headers = triton_request([jpegs["orange"], b"broken"])
    cases = [
        (client.post(INFER, content=body, headers=headers), 400, "images[1]: not an image"),
        (client.post(INFER, content=body[:-3], headers=headers), 400, "binary_data_size"),
        (client.post(INFER, content=body, headers={"Inference-Header-Content-Length": str(len(body) + 1)}), 400, "Inference-Header-Content-Length"),
        (client.post(INFER, content=b"{nope"), 400, "not valid JSON"),
        (infer_json([{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "data": [good]}]), 400, "one input, 'images'"),
        (infer_json([{"name": "images", "datatype": "FP32", "shape": [1], "data": [1.0]}]), 400, "must be BYTES"),
        (infer_json([{"name": "images", "datatype": "BYTES", "shape": [2], "data": [good]}]), 400, "holds 2 elements"),
        (infer_json([{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]), 400, "not valid base64"),
        (infer_json([{"name": "images", "datatype": "BYTES", "shape": [1], "data": [good]}], outputs=[{"name": "probs"}]),
         400, "no output 'probs'"),
        (infer_json([{"name": "images", "datatype": "BYTES", "shape": [1], "data": [good]}], parameters={"topk": 0}),
         400, "parameters.topk"),
        (infer_json([], path="/v2/models/resnet-18/infer"), 404, "this server serves 'efficientnet-lite0'"),
        (client.get(f"/v2/models/{MODEL}/versions/7"), 404, "no version '7'"),
    ]
    for r, status, words in cases:
        assert r.status_code == status and words in r.json()["error"], r.text


def test_oip_outputs_named_twice_are_refused_and_encoding_runs_off_the_event_loop(client, jpegs, monkeypatch):
    """A request could name 'labels' 20,000 times with topk 1000 and get a 472 MB answer, encoded on the
    event loop (health probes waited seconds): each output may be named once, and the work is in a thread."""
    image = [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpegs["orange"]).decode()]}]
    r = client.post(INFER, json={"inputs": image, "parameters": {"topk": 1000}, "outputs": [{"name": "labels"}] * 20_000})
    assert r.status_code == 400 and "asked for twice" in r.json()["error"] and len(r.content) < 1000
    on_loop = []
    encode, parse = serve_oip.encode_infer_response, serve_oip.parse_infer_request

    def spy(real):
        def call(*args):
            on_loop.append(asyncio_running_loop() is not None)
            return real(*args)
        return call

    monkeypatch.setattr(serve_oip, "encode_infer_response", spy(encode))
    monkeypatch.setattr(serve_oip, "parse_infer_request", spy(parse))
    r = client.post(INFER, json={"inputs": image, "outputs": [{"name": "labels"}, {"name": "indices"}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["orange"]
    assert on_loop == [False, False]


# --- metrics, API key ------------------------------------------------------------------------------

def scrape(client) -> dict[str, float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_metrics_count_requests_latency_batches_and_queue(classifier, jpegs):
    with serving(classifier) as client:
        post_image(client, jpegs["orange"])
        post_image(client, b"junk")
        m = scrape(client)
    assert m['imgclass_requests_total{route="/v1/classify",status="200"}'] == 1
    assert m['imgclass_requests_total{route="/v1/classify",status="400"}'] == 1
    assert m['imgclass_request_seconds_count{route="/v1/classify"}'] == 2
    assert m['imgclass_images_total{result="ok"}'] == 1 and m['imgclass_images_total{result="error"}'] == 1
    assert m["imgclass_batch_size_count"] == 1 and m["imgclass_batch_seconds_count"] == 1
    assert m["imgclass_queue_depth"] == 0 and m["imgclass_images_in_flight"] == 0


def test_api_key_guards_everything_but_the_page_and_health(classifier, jpegs):
    with serving(classifier, api_key="s3cret") as client:
        for r in (post_image(client, jpegs["orange"]), post_image(client, jpegs["orange"], authorization="Bearer wrong"),
                  client.get("/metrics"), client.get(f"/v2/models/{MODEL}")):
            assert r.status_code == 401 and "API key" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
        assert post_image(client, jpegs["orange"], authorization="Bearer s3cret").status_code == 200
        assert post_image(client, jpegs["orange"], **{"x-api-key": "s3cret"}).status_code == 200
        for path in ("/", "/v2/health/live", "/v2/health/ready"):
            assert client.get(path).status_code == 200


# --- the upload page in Chromium ----------------------------------------------------------------

@contextmanager
def uvicorn_thread(app, http="auto"):
    """The app on a real uvicorn (its HTTP protocol ``http``), in a thread, on a free 127.0.0.1 port."""
    import uvicorn

    from imgclass.webstack import listen

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, http=http, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive())
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_upload_page_shows_the_top_label(classifier, images_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with uvicorn_thread(create_app([classifier])) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(url + "/")
            page.set_input_files("#file", str(images_dir / "orange_0.jpg"))
            sync_api.expect(page.locator(".card .top-label")).to_have_text("orange")
            sync_api.expect(page.locator(".card li").first).to_contain_text("orange")
            (tmp_path / "notes.jpg").write_bytes(b"not an image")
            page.set_input_files("#file", str(tmp_path / "notes.jpg"))
            sync_api.expect(page.locator(".card .top-label.error")).to_contain_text("not an image")
        finally:
            browser.close()


# --- `imgclass serve` as a process ------------------------------------------------------------------

@contextmanager
def serve_process(*flags: str):
    """``imgclass serve --port 0 FLAGS`` until the block ends; yields (process, base URL, its log lines)."""
    proc = subprocess.Popen([sys.executable, "-m", "imgclass", "serve", "--port", "0", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = []
    try:
        for line in proc.stderr:
            log.append(line)
            if found := re.search(r" at (http://[\d.]+:\d+)/ ", line):
                break
        else:
            pytest.fail(f"imgclass serve did not start:\n{''.join(log)}")
        threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
        url = found.group(1)
        wait_until(lambda: proc.poll() is not None or httpx.get(url + "/v2/health/ready").status_code == 200, 120)
        assert proc.poll() is None, "".join(log)
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_tritonclient_talks_to_a_real_server_unchanged(classifier, jpegs):
    from tritonclient.utils import InferenceServerException

    with serve_process("--max-batch", "2", "--workers", "2") as (_, url, _):  # two engines share the queue
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.get_model_metadata(MODEL)["inputs"][0]["name"] == "images"
        images = triton.InferInput("images", [3], "BYTES")
        images.set_data_from_numpy(np.array([jpegs["orange"], jpegs["banana"], jpegs["orange"]], dtype=np.object_))
        result = client.infer(MODEL, [images], parameters={"topk": 2})
        assert result.as_numpy("labels")[:, 0].tolist() == [b"orange", b"banana", b"orange"]
        assert result.as_numpy("confidences").shape == (3, 2) and result.as_numpy("indices")[1, 0] == 954
        only = client.infer(MODEL, [images], outputs=[triton.InferRequestedOutput("labels", binary_data=False)])
        assert only.as_numpy("labels").ravel().tolist() == ["orange", "banana", "orange"]  # JSON: str
        assert only.as_numpy("confidences") is None
        bad = triton.InferInput("images", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"not a jpeg"], dtype=np.object_))
        with pytest.raises(InferenceServerException, match=r"images\[0\]: not an image"):
            client.infer(MODEL, [bad])
        client.close()


def test_sigterm_lets_requests_in_flight_finish(classifier, jpegs):
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(jpegs['orange'])}\r\n\r\n").encode()
    with serve_process() as (proc, url, log):
        host, port = url.removeprefix("http://").split(":")
        # Three requests under way: headers and part of the body sent, the rest held back.
        conns = [socket.create_connection((host, int(port)), timeout=60) for _ in range(3)]
        for conn in conns:
            conn.sendall(head + jpegs["orange"][:1000])
        assert httpx.get(url + "/v2/health/live").status_code == 200  # the server has read them by now
        proc.send_signal(signal.SIGTERM)

        def refused() -> bool:  # draining: no new connections
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return False
            except OSError:
                return True

        wait_until(refused)
        answers = []
        for conn in conns:
            conn.sendall(jpegs["orange"][1000:])
            answers.append(conn.makefile("rb").read())  # to the end: the server closes after answering
            conn.close()
        for raw in answers:
            status, _, body = raw.partition(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 200"), raw[:300]
            assert json.loads(body)["predictions"][0]["label"] == "orange"
        assert proc.wait(60) == 0, "".join(log)
    assert "server stopped" in "".join(log)


def test_cli_bad_settings_and_a_taken_port_fail_in_one_line():
    out = run_cli("serve", "--max-batch", "0")
    assert out.returncode == 1 and out.stderr.strip() == "imgclass: error: --max-batch must be >= 1"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        out = run_cli("serve", "--port", str(taken.getsockname()[1]))
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "cannot listen on 127.0.0.1:" in out.stderr


def test_connections_have_nagle_off():
    # A kept-alive client would otherwise wait for its own delayed ACK before each response body.
    import socket

    from imgclass.webstack import set_nodelay

    class Transport:
        def __init__(self, sock):
            self.sock = sock

        def get_extra_info(self, name):
            return self.sock if name == "socket" else None

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        set_nodelay(Transport(sock))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
