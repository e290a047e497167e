"""``imgclass serve``: an HTTP inference server (REST, Open Inference Protocol v2, Prometheus
metrics, an upload page) with dynamic micro-batching, on uvicorn."""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
from dataclasses import replace

from . import HelpFormatter
from ..classifier import Classifier
from ..config import ClassifierConfig
from ..errors import ImgclassError
from .classify import add_model_arguments, add_result_arguments

SERVE_PORT = 8000  # KServe's and Triton's HTTP port


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="an HTTP inference server (REST, KServe/Triton v2, metrics, upload page)",
                       formatter_class=HelpFormatter,
                       description="Serve a registry network or your own ONNX model over HTTP: POST /v1/classify "
                                   "(an image body, or multipart), the Open Inference Protocol v2 at /v2 (KServe, "
                                   "tritonclient), Prometheus metrics at /metrics and an upload page at /. "
                                   "Concurrent requests are batched together. Ctrl-C or SIGTERM finish the "
                                   "requests in flight, then stop.")
    add_model_arguments(p)
    add_result_arguments(p)
    p.set_defaults(func=run)
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (0.0.0.0: every machine that can reach this one; add --api-key)")
    net.add_argument("--port", type=int, default=SERVE_PORT, help="port (0: any free port)")
    net.add_argument("--api-key", default=None,
                     help="require this key (Authorization: Bearer KEY, or X-API-Key: KEY) everywhere but the page "
                          "and /v2/health (default: $IMGCLASS_API_KEY, else no key)")
    net.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                     help="a scheme://host[:port] whose pages may use the upload page and post forms here, and whose "
                          "name the browser routes accept as Host (a reverse proxy's public name); repeatable "
                          "(default: none, only this server's own names)")
    net.add_argument("--max-body-mb", type=float, default=20.0, help="larger request bodies get 413")
    net.add_argument("--max-inflight-mb", type=float, default=256.0,
                     help="most request-body bytes in the server at once, all requests together; a request whose "
                          "body would pass it gets 503 and Retry-After")
    net.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                     help="a request body that sends nothing for this long gets 408 and its connection closed")
    net.add_argument("--head-timeout", type=float, default=10.0, metavar="SECONDS",
                     help="a connection that has not sent a whole request head this long after the server began "
                          "waiting for one (it opened, or its last answer went out) is closed")
    net.add_argument("--max-connections", type=int, default=512, metavar="N",
                     help="most connections open at once; one more closes the one waiting longest for a request "
                          "head, or itself when all are busy (keep it under `ulimit -n`)")
    net.add_argument("--access-log", action="store_true", help="log every request (off: a line per request costs time)")
    batch = p.add_argument_group("batching")
    batch.add_argument("--max-batch", type=int, default=16, help="most images per inference batch")
    batch.add_argument("--batch-timeout-ms", type=float, default=5.0,
                       help="longest a batch waits for more images while others are still being decoded")
    batch.add_argument("--max-queue", type=int, default=256,
                       help="most images in the server at once; a request beyond gets 503 and Retry-After")
    batch.add_argument("--workers", type=int, default=1,
                       help="model replicas in this one process, each running batches in a thread of its own, "
                            "sharing the queue (--threads split among them); 2+ helps a GPU or a many-core CPU")


def run(args) -> int:
    try:
        import uvicorn

        from ..serve import Settings, create_app
        from ..webstack import StrictProtocol, listen
    except ModuleNotFoundError as e:
        raise ImgclassError(f"imgclass serve needs {e.name}: pip install 'imgclass[serve]'") from None
    if args.workers < 1:
        raise ImgclassError("--workers must be >= 1")
    settings = Settings(max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms, max_queue=args.max_queue,
                        max_body_mb=args.max_body_mb, max_inflight_mb=args.max_inflight_mb,
                        body_timeout_s=args.body_timeout, head_timeout_s=args.head_timeout,
                        max_connections=args.max_connections, api_key=args.api_key or os.environ.get("IMGCLASS_API_KEY"),
                        host=args.host, allow_origins=tuple(args.allow_origin), topk=args.topk, threshold=args.threshold)
    settings.check()
    sock = listen(args.host, args.port)  # before the model loads: a taken port fails at once
    host, port = sock.getsockname()[:2]
    if settings.api_key is None and not ipaddress.ip_address(host).is_loopback:
        print(f"imgclass: warning: listening on {host} without --api-key: anyone on the network can use this server; "
              "set --api-key (or $IMGCLASS_API_KEY)", file=sys.stderr, flush=True)
    # Each replica gets its share of the cores: ONNX Runtime would otherwise give every one all of them.
    threads = max(1, (args.threads or os.cpu_count() or 1) // args.workers)
    config = replace(ClassifierConfig.from_args(args), threads=threads)
    nets = [Classifier(**config.options()) for _ in range(args.workers)]
    app = create_app(nets, settings)
    shown = f"[{host}]" if ":" in host else host
    print(f"imgclass: serving {nets[0].network_name} at http://{shown}:{port}/ (upload page; POST /v1/classify; "
          f"Open Inference Protocol at /v2/models/{nets[0].network_name}; /metrics)", file=sys.stderr, flush=True)
    # Heads: --head-timeout, and at most --max-connections (StrictProtocol); bodies: --body-timeout
    # (webstack.RequestLimits); a kept-alive connection idle for timeout_keep_alive seconds closes.
    protocol = StrictProtocol.limited(settings.head_timeout_s, settings.max_connections)
    config = uvicorn.Config(app, http=protocol, lifespan="on", access_log=args.access_log,
                            log_level="info", timeout_keep_alive=5,
                            timeout_graceful_shutdown=30)  # then requests still running are cut off
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM / Ctrl-C, then re-raises the signal to whatever handler was there
    # before it: make that a no-op, so a drained server ends with a clean exit and one line.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in stop_signals}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ImgclassError("the server did not start; see uvicorn's message above")
    print("imgclass: server stopped (the requests in flight were answered first)", file=sys.stderr)
    return 0
