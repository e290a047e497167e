"""`imgclass serve` under load against offline `imgclass classify`, in one run (issue 11's bar):
the server's img/s under 32 concurrent clients sending JPEGs vs the CLI's img/s on the same folder,
p50/p95 latency at one client vs in-process single-image latency, and failed requests.

    python benchmarks/serve_load.py [--folder GLOB] [--requests 2000] [--clients 32] [--quick]

The load generator is a bare asyncio HTTP/1.1 client (keep-alive, one connection per client) so
it takes as little of the machine as it can: client and server share the same cores.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import imgclass
from imgclass.media.inputs import list_images

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLI_RATE = re.compile(r"\(([\d.]+) img/s\)")


def offline_rate(folder: str, network: str) -> float:
    """img/s that `imgclass classify FOLDER` reports (model loading excluded, as it reports it)."""
    out = subprocess.run([sys.executable, "-m", "imgclass", "classify", folder, "--network", network],
                         capture_output=True, text=True)
    found = CLI_RATE.search(out.stderr)
    if out.returncode != 0 or found is None:
        sys.exit(f"imgclass classify failed:\n{out.stderr}")
    return float(found.group(1))


def in_process_latency(paths: list[Path], network: str, count: int) -> list[float]:
    """Seconds per `Classifier.classify(load_image(file))`, one file at a time (after a warm-up)."""
    net = imgclass.Classifier(network)
    for path in paths[:3]:
        net.classify(imgclass.load_image(path))
    seconds = []
    for path in itertools.islice(itertools.cycle(paths), count):
        start = time.perf_counter()
        net.classify(imgclass.load_image(path))
        seconds.append(time.perf_counter() - start)
    return seconds


def start_server(network: str, flags: list[str]) -> tuple[subprocess.Popen, str, int]:
    """`imgclass serve --port 0` in a subprocess, once it answers ready; returns (process, host, port)."""
    proc = subprocess.Popen([sys.executable, "-m", "imgclass", "serve", "--port", "0", "--network", network, *flags],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        sys.stderr.write(line)
        if found := re.search(r" at http://([\d.]+):(\d+)/ ", line):
            break
    else:
        sys.exit("imgclass serve did not start")
    host, port = found.group(1), int(found.group(2))
    threading.Thread(target=lambda: sys.stderr.writelines(proc.stderr), daemon=True).start()  # never a full pipe
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=5):
                return proc, host, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("imgclass serve did not get ready")
            time.sleep(0.2)


def request_bytes(host: str, jpeg: bytes) -> bytes:
    return (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One request on a kept-alive connection: (status, body)."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def load(host: str, port: int, requests: list[bytes], clients: int) -> tuple[float, list[float], int]:
    """Send every request once over ``clients`` concurrent connections; (seconds, latencies, failures)."""
    work, latencies, failures = iter(requests), [], 0

    async def client() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        for request in work:  # one shared iterator: each request goes out once
            start = time.perf_counter()
            try:
                status, body = await post(reader, writer, request)
                ok = status == 200 and b'"predictions"' in body
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                ok = False
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            latencies.append(time.perf_counter() - start)
            failures += not ok
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, latencies, failures


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def batch_totals(host: str, port: int) -> tuple[float, float]:
    """(images, batches) the server has run so far, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return samples["imgclass_batch_size_sum"], samples["imgclass_batch_size_count"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--folder", default=str(DATA / "hymenoptera" / "val" / "*" / "*.jpg"), help="JPEG folder or glob")
    ap.add_argument("--network", default="efficientnet-lite0")
    ap.add_argument("--requests", type=int, default=2000, help="requests in the concurrent run")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients")
    ap.add_argument("--latency-requests", type=int, default=200, help="requests at one client (and in-process runs)")
    ap.add_argument("--server-flags", default="", help="more `imgclass serve` flags, e.g. '--max-batch 8'")
    ap.add_argument("--quick", action="store_true", help="a few requests only: check that the script works")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.latency_requests = 64, 10
    paths = list_images(args.folder)
    jpegs = [p.read_bytes() for p in paths]

    offline = offline_rate(args.folder, args.network)
    local = in_process_latency(paths, args.network, args.latency_requests)
    proc, host, port = start_server(args.network, args.server_flags.split())
    try:
        asyncio.run(load(host, port, [request_bytes(host, j) for j in jpegs[:args.clients]], args.clients))  # warm-up
        _, single, single_failed = asyncio.run(load(host, port, [request_bytes(host, j) for j in
                                                                 itertools.islice(itertools.cycle(jpegs), args.latency_requests)], 1))
        images_before, batches_before = batch_totals(host, port)
        many = [request_bytes(host, j) for j in itertools.islice(itertools.cycle(jpegs), args.requests)]
        seconds, latencies, failed = asyncio.run(load(host, port, many, args.clients))
        images_after, batches_after = batch_totals(host, port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    batch = (images_after - images_before) / max(1, batches_after - batches_before)
    served = args.requests / seconds
    p50, p50_local = percentile(single, 50) * 1000, percentile(local, 50) * 1000
    rows = [
        ("offline `imgclass classify`", f"{offline:.1f} img/s", ""),
        (f"server, {args.clients} clients", f"{served:.1f} img/s", f"{served / offline:.0%} of offline (bar: >= 80%)"),
        (f"server p50 / p95, {args.clients} clients", f"{percentile(latencies, 50) * 1000:.1f} / {percentile(latencies, 95) * 1000:.1f} ms", ""),
        ("server p50 / p95, 1 client", f"{p50:.1f} / {percentile(single, 95) * 1000:.1f} ms",
         f"p50 {p50 - p50_local:+.1f} ms vs in-process (bar: <= 15 ms)"),
        ("in-process p50 / p95, 1 image", f"{p50_local:.1f} / {percentile(local, 95) * 1000:.1f} ms", "Classifier.classify(load_image(file))"),
        ("failed requests", f"{failed + single_failed} of {args.requests + args.latency_requests}", "(bar: 0)"),
        (f"mean server batch, {args.clients} clients", f"{batch:.1f} images", ""),
    ]
    print(f"\n{len(paths)} JPEGs from {args.folder}, {args.network}, {os.cpu_count()} CPUs, "
          f"{args.requests} requests from {args.clients} clients" + (" (--quick: not a measurement)" if args.quick else ""))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>20}  {note}")
    print(json.dumps({"offline_img_s": offline, "served_img_s": served, "ratio": served / offline, "p50_1client_ms": p50,
                      "p50_in_process_ms": p50_local, "failed": failed + single_failed, "mean_batch": batch}))


if __name__ == "__main__":
    main()
