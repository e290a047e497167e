"""Soak `imgclass serve`: good and hostile clients together for minutes, on the loopback address.
Prints the server's RSS after warm-up and at the end, p50/p99 of the good requests, how many good
answers differed from `imgclass classify`'s, and how many hostile requests got anything but a 4xx
(or a closed connection, for an incomplete one).

    python benchmarks/soak.py --minutes 10 --images ../shared/data/hymenoptera/val
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

import imgclass
from imgclass.media.inputs import list_images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def hostile_requests(jpeg: bytes) -> list:
    """What a careless or hostile client sends: (method, path, headers, body, raw?)."""
    infer = "/v2/models/efficientnet-lite0/infer"
    image = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpeg).decode()]}
    deep = "[" * 5000 + "]" * 5000
    return [
        ("POST", infer, {}, json.dumps({"inputs": [image], "outputs": [{"name": "labels"}] * 1000}).encode()),
        ("POST", infer, {}, b'{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ' + deep.encode() + b"}]}"),
        ("POST", infer, {"inference-header-content-length": b"\xb2"}, b"{}"),  # a non-ASCII digit
        ("POST", infer, {}, b"{nope"),
        ("POST", "/v1/classify", {"content-type": "image/jpeg"}, b"\xff\xd8garbage"),
        ("POST", "/v1/classify", {"content-type": "image/jpeg"}, b""),
        ("POST", "/v1/classify", {"content-type": "text/plain"}, b"hello"),
        ("POST", "/v1/classify?topk=0", {"content-type": "image/jpeg"}, jpeg),
        ("GET", "/v2/models/nope", {}, b""),
        ("GET", "/" + "a" * 5000, {}, b""),
        ("POST", "/v1/classify", {"content-type": "image/jpeg", "content-length": str(10 ** 9)}, None),  # declared, never sent
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="a folder of photos for the good clients")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--good", type=int, default=4, help="good client threads")
    ap.add_argument("--hostile", type=int, default=4, help="hostile client threads")
    args = ap.parse_args()
    paths = list_images(args.images)[:40]
    net = imgclass.Classifier(device="cpu")
    expected = {p: preds[0].index for p, preds, _ in net.classify_files(paths)}
    files = {p: p.read_bytes() for p in paths}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "imgclass", "serve", "--port", str(port), "--device", "cpu",
                               "--max-queue", "64", "--body-timeout", "5"], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    stop, lock = threading.Event(), threading.Lock()
    latencies, wrong, good_errors, bad_answers, hostile_sent = [], [0], [0], [0], [0]

    def good_client() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                path = random.choice(paths)
                start = time.perf_counter()
                r = client.post("/v1/classify", content=files[path], headers={"content-type": "image/jpeg"})
                with lock:
                    if r.status_code == 503:  # a full queue is an answer, not an error
                        continue
                    latencies.append(time.perf_counter() - start)
                    if r.status_code != 200:
                        good_errors[0] += 1
                    elif r.json()["predictions"][0]["index"] != expected[path]:
                        wrong[0] += 1

    def hostile_client() -> None:
        requests = hostile_requests(files[paths[0]])
        while not stop.is_set():
            method, path, headers, body = random.choice(requests)
            try:
                with httpx.Client(base_url=base, timeout=10) as client:
                    if body is None:  # a declared body that never comes: the server must let go of it
                        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                            s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                                      + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n")
                            answer = s.recv(100)
                        ok = answer == b"" or answer[9:10] == b"4"
                    else:
                        r = client.request(method, path, headers=headers, content=body)
                        ok = 400 <= r.status_code < 500
            except (httpx.HTTPError, OSError):
                ok = True  # a closed connection, for an incomplete or refused request
            with lock:
                hostile_sent[0] += 1
                bad_answers[0] += not ok

    threads = [threading.Thread(target=good_client, daemon=True) for _ in range(args.good)]
    threads += [threading.Thread(target=hostile_client, daemon=True) for _ in range(args.hostile)]
    for t in threads:
        t.start()
    time.sleep(min(30.0, args.minutes * 60 / 10))  # warm-up: engines, batches, the first buffers
    rss_start = rss_mb(server.pid)
    time.sleep(max(0.0, args.minutes * 60 - min(30.0, args.minutes * 60 / 10)))
    rss_end = rss_mb(server.pid)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    server.terminate()
    server.wait(timeout=60)
    ms = sorted(x * 1000 for x in latencies)
    print(f"soak {args.minutes:g} min, {args.good} good + {args.hostile} hostile clients")
    print(f"server RSS after warm-up {rss_start:.0f} MB, at the end {rss_end:.0f} MB ({rss_end / rss_start - 1:+.1%})")
    print(f"good requests {len(ms)}: p50 {statistics.median(ms):.1f} ms, p99 {ms[int(len(ms) * 0.99)]:.1f} ms, "
          f"errors {good_errors[0]}, answers differing from imgclass classify {wrong[0]}")
    print(f"hostile requests {hostile_sent[0]}: answers other than 4xx or a closed connection {bad_answers[0]}")


if __name__ == "__main__":
    main()
