"""The inference server as an ASGI app (Starlette; ``imgclass serve`` runs it on uvicorn).

Routes:
    GET  /                              the upload page (static/index.html)
    POST /v1/classify?topk=&threshold=  one image as the body (Content-Type image/*), or several as
                                        multipart/form-data; answers what ``imgclass classify --json`` prints:
                                        {"input", "predictions": [{index, label, confidence}]}, or
                                        {"results": [...]} for multipart (a bad file gets "error" in its place)
    GET  /v2, /v2/health/live, /v2/health/ready                 Open Inference Protocol v2 (KServe, Triton):
    GET  /v2/models/{model}[/versions/1][/ready]                model metadata and readiness,
    POST /v2/models/{model}[/versions/1]/infer                  inference (see oip.py for the tensors)
    GET  /metrics                       Prometheus metrics

Errors are JSON ``{"error": "..."}``: 400 bad input, 401 no API key, 403 a browser request from another
site or by a foreign Host name (the page; multipart posts with an Origin), 404, 408 a body that stalls (--body-timeout),
413 body over --max-body-mb (or more images than --max-queue), 415 not an image or multipart, 503 queue
full or request bodies in flight over --max-inflight-mb (with Retry-After). A connection whose request head
is not whole within --head-timeout is closed, and so is, past --max-connections, the one waiting longest
for a head (``webstack.StrictProtocol``, which ``imgclass serve`` runs uvicorn with).
"""
from __future__ import annotations

import asyncio
import hmac
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..classifier import Classifier, Prediction, result_record
from ..errors import ImgclassError
from ..models.resolve import RUN_MODEL, OnnxRef
from ..webstack import ERROR_HANDLERS, HEAD_TIMEOUT_S, RequestLimits, SameSite, json_error, origin_of
from . import oip
from .batcher import MicroBatcher, QueueFull
from .metrics import Metrics, MetricsMiddleware

RAW_NAME = "body"  # the "input" of an image sent as the whole request body
OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready"})  # no API key: the page and the probes


@dataclass(frozen=True)
class Settings:
    """How the server batches, bounds and answers (the ``imgclass serve`` flags of the same names;
    ``host`` and ``allow_origins``: the names and origins its browser routes take)."""

    max_batch: int = 16
    batch_timeout_ms: float = 5.0
    max_queue: int = 256
    max_body_mb: float = 20.0
    max_inflight_mb: float = 256.0
    body_timeout_s: float = 30.0
    head_timeout_s: float = HEAD_TIMEOUT_S  # the pages' own
    max_connections: int = 512
    api_key: str | None = None
    host: str = "127.0.0.1"
    allow_origins: tuple[str, ...] = ()
    topk: int = 1
    threshold: float = 0.0
    decode_threads: int | None = None

    def check(self) -> None:
        """Raise ImgclassError naming the first setting out of range."""
        problems = [(self.max_batch < 1, "--max-batch must be >= 1"),
                    (not self.batch_timeout_ms >= 0, "--batch-timeout-ms must be >= 0"),
                    (self.max_queue < self.max_batch, f"--max-queue must be >= --max-batch ({self.max_batch})"),
                    (not self.max_body_mb > 0, "--max-body-mb must be > 0"),
                    (not self.max_inflight_mb > 0, "--max-inflight-mb must be > 0"),
                    (not self.body_timeout_s > 0, "--body-timeout must be > 0 seconds"),
                    (not self.head_timeout_s > 0, "--head-timeout must be > 0 seconds"),
                    (self.max_connections < 1, "--max-connections must be >= 1"),
                    (any(origin_of(o) is None for o in self.allow_origins),
                     "--allow-origin takes origins like https://imgclass.example.com (scheme://host[:port])"),
                    (self.api_key == "", "--api-key is empty; give a key or leave the flag out"),
                    (self.topk < 1, "--topk must be >= 1"),
                    (not 0 <= self.threshold <= 1, "--threshold must be within 0..1"),
                    (self.decode_threads is not None and self.decode_threads < 1, "decode threads must be >= 1")]
        for bad, message in problems:
            if bad:
                raise ImgclassError(message)


RUN_STEM = RUN_MODEL.removesuffix(".onnx")


def model_id(net: Classifier) -> str:
    """The model's name in v2 URLs (``/v2/models/NAME``), letters, digits and ``._-`` only: a registry
    network's name; an ONNX file's stem, or for a training run's own file (model.onnx, model-int8.onnx)
    its run folder's name, so ``serve --model models/hymenoptera`` serves ``hymenoptera``, not
    "efficientnet-lite0 trained on hymenoptera" (which would need %20s).

    Example:
        >>> re.sub(r"[^A-Za-z0-9._-]+", "-", "efficientnet-lite0 trained on ants").strip("-")
        'efficientnet-lite0-trained-on-ants'
    """
    name = net.network_name
    if isinstance(net.model, OnnxRef):
        path = net.model.path
        name = path.parent.name + path.stem.removeprefix("model") if path.stem in (RUN_STEM, f"{RUN_STEM}-int8") \
            else path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


class Service:
    """What the routes share: the model's replicas, the batcher, the decode threads, the metrics."""

    def __init__(self, classifiers: Sequence[Classifier], settings: Settings):
        if not classifiers:
            raise ImgclassError("the server needs at least one classifier")
        settings.check()
        self.net, self.settings = classifiers[0], settings  # replicas of one model: any one decodes and labels
        self.name = model_id(self.net)
        self.batcher = MicroBatcher([c.probabilities for c in classifiers], max_batch=settings.max_batch,
                                    timeout_s=settings.batch_timeout_ms / 1000, max_queue=settings.max_queue)
        self.metrics = Metrics(self.batcher)
        self.batcher.on_batch = self.metrics.on_batch
        self.page = resources.files("imgclass.serve").joinpath("static", "index.html").read_text(encoding="utf-8")
        self.same_site = SameSite(settings.host, settings.allow_origins)
        self.decoders: ThreadPoolExecutor | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette):
        """Warm the engines and start the batch loops; after the server has drained, stop them."""
        self.decoders = ThreadPoolExecutor(self.settings.decode_threads or min(4, os.cpu_count() or 1),
                                           thread_name_prefix="imgclass-decode")
        side = self.net.preprocess.size
        await self.batcher.start([np.zeros((n, 3, side, side), np.float32) for n in sorted({1, self.settings.max_batch})])
        try:
            yield
        finally:
            await self.batcher.stop()
            self.decoders.shutdown(wait=True)

    async def classify_images(self, images: Sequence[tuple[str, bytes]], topk: int,
                              threshold: float) -> list[list[Prediction] | ImgclassError]:
        """Decode (in the decode threads), batch and classify named encoded images; a bad one gets
        its ImgclassError in place of its predictions."""
        if len(images) > self.batcher.max_queue:
            raise HTTPException(413, f"{len(images)} images in one request; this server takes at most "
                                     f"{self.batcher.max_queue} (--max-queue): split the request")
        loop = asyncio.get_running_loop()
        with self.batcher.admit(len(images)) as ticket:
            decoded = await asyncio.gather(*(loop.run_in_executor(self.decoders, self._prepare, data, name)
                                             for name, data in images))
            probs = iter(await ticket.infer([x for x in decoded if not isinstance(x, ImgclassError)]))
        results = [x if isinstance(x, ImgclassError) else self.net.predictions(next(probs), topk, threshold)
                   for x in decoded]
        failed = sum(isinstance(r, ImgclassError) for r in results)
        self.metrics.images.labels("ok").inc(len(results) - failed)
        self.metrics.images.labels("error").inc(failed)
        return results

    def _prepare(self, data: bytes, name: str) -> np.ndarray | ImgclassError:
        try:
            return self.net.prepare(data, name)
        except ImgclassError as e:
            return e

    # --- routes -------------------------------------------------------------------------------

    async def upload_page(self, request: Request) -> HTMLResponse:
        self._browser_check(request)
        return HTMLResponse(self.page)

    def _browser_check(self, request: Request) -> None:
        """403 for what another site's page can make a browser send (webstack.SameSite)."""
        if refusal := self.same_site.refusal(request.scope):
            raise HTTPException(403, refusal)

    async def classify(self, request: Request) -> JSONResponse:
        """``POST /v1/classify``: one raw image, or several as multipart."""
        topk, threshold = self._query(request)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media == "multipart/form-data":
            # What a form on any site can post, unlike an image body. Every browser POST carries
            # Origin; curl -F and scripts send none, and may name this server however they reach it.
            if "origin" in request.headers:
                self._browser_check(request)
            images = await self._form_images(request)
            results = await self.classify_images(images, topk, threshold)
            body = {"results": [result_record(name, r) for (name, _), r in zip(images, results)]}
            if all(isinstance(r, ImgclassError) for r in results):
                return JSONResponse({"error": str(results[0]), **body}, 400)
            return JSONResponse(body)
        if media.startswith("image/") or media == "application/octet-stream":
            data = await request.body()
            if not data:
                raise ImgclassError("empty request body; send an image file")
            [result] = await self.classify_images([(RAW_NAME, data)], topk, threshold)
            if isinstance(result, ImgclassError):
                raise result
            return JSONResponse(result_record(RAW_NAME, result))
        raise HTTPException(415, f"Content-Type {media or 'missing'}: send an image file as the body "
                                 "(Content-Type image/jpeg, image/png, ...) or several as multipart/form-data")

    def _query(self, request: Request) -> tuple[int, float]:
        q = request.query_params
        try:
            topk, threshold = int(q.get("topk", self.settings.topk)), float(q.get("threshold", self.settings.threshold))
        except ValueError:
            topk, threshold = 0, 0.0
        if topk < 1 or not 0 <= threshold <= 1:
            raise ImgclassError(f"bad query {request.url.query!r}: topk must be a whole number >= 1 and threshold within 0..1")
        return topk, threshold

    async def _form_images(self, request: Request) -> list[tuple[str, bytes]]:
        """The file parts of a multipart body, in order, named by their file names."""
        form = await request.form()  # its size is bounded by RequestLimits; the image count by --max-queue, after
        try:
            files = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
            if not files:
                raise ImgclassError("the multipart body holds no file; send each image as a file part "
                                    "(curl -F image=@cat.jpg)")
            return [(f.filename or key, await f.read()) for key, f in files]
        finally:
            await form.close()

    async def server_metadata(self, request: Request) -> JSONResponse:
        return JSONResponse({"name": "imgclass", "version": __version__, "extensions": oip.EXTENSIONS})

    async def live(self, request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> JSONResponse:
        return JSONResponse({"ready": self.batcher.running}, 200 if self.batcher.running else 503)

    async def model_metadata(self, request: Request) -> JSONResponse:
        self._check_model(request)
        return JSONResponse(oip.model_metadata(self.name))

    async def model_ready(self, request: Request) -> JSONResponse:
        self._check_model(request)
        return JSONResponse({"name": self.name, "ready": self.batcher.running}, 200 if self.batcher.running else 503)

    async def infer(self, request: Request) -> Response:
        """``POST /v2/models/{model}/infer``: the Open Inference Protocol's inference request."""
        self._check_model(request)
        # Parsing and encoding scale with the request: in a thread, so the event loop keeps answering.
        req = await run_in_threadpool(oip.parse_infer_request, await request.body(), request.headers.get(oip.HEADER_LENGTH))
        named = [(f"{oip.INPUT}[{i}]", data) for i, data in enumerate(req.images)]
        results = await self.classify_images(named, req.topk or self.settings.topk, 0.0)
        failed = [str(r) for r in results if isinstance(r, ImgclassError)]
        if failed:  # an output tensor needs every image: say which ones failed, all in one line
            raise ImgclassError("; ".join(failed))
        body, headers = await run_in_threadpool(oip.encode_infer_response, self.name, req, results)
        return Response(body, headers=headers)

    def _check_model(self, request: Request) -> None:
        name, version = request.path_params["model"], request.path_params.get("version", oip.VERSION)
        if name != self.name:
            raise HTTPException(404, f"no model '{name}'; this server serves '{self.name}'")
        if version != oip.VERSION:
            raise HTTPException(404, f"model '{name}' has no version '{version}'; it has version {oip.VERSION}")

    async def metrics_page(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, headers={"content-type": content_type})

    def routes(self) -> list[Route]:
        model_routes = []
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            model_routes += [Route(prefix, self.model_metadata), Route(f"{prefix}/ready", self.model_ready),
                             Route(f"{prefix}/infer", self.infer, methods=["POST"])]
        return [Route("/", self.upload_page), Route("/v1/classify", self.classify, methods=["POST"]),
                Route("/v2", self.server_metadata), Route("/v2/health/live", self.live),
                Route("/v2/health/ready", self.ready), *model_routes, Route("/metrics", self.metrics_page)]


class ApiKeyMiddleware:
    """With an API key set, every route but the page and the health probes wants it, as
    ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (compared in constant time, as UTF-8 bytes)."""

    def __init__(self, app: ASGIApp, key: str):
        # surrogateescape: a key from argv or the environment that is not UTF-8 keeps its own bytes
        self.app, self.key = app, key.encode("utf-8", "surrogateescape")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not self._allowed(Headers(scope=scope)):
            response = JSONResponse({"error": "missing or wrong API key; send it as Authorization: Bearer KEY "
                                              "or X-API-Key: KEY"}, 401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)

    def _allowed(self, headers: Headers) -> bool:
        auth = headers.get("authorization", "")
        # Only HTTP's own blanks: str.strip() would also take '\xa0', the last byte of a UTF-8 'à'
        given = auth[7:].strip(" \t") if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes the client sent
        return hmac.compare_digest(given.encode("latin-1"), self.key)


def create_app(classifiers: Sequence[Classifier], settings: Settings = Settings()) -> Starlette:
    """The server app over one model's replicas (each gets a batch loop and a thread of its own).

    Example:
        >>> app = create_app([Classifier("efficientnet-lite0")], Settings(max_batch=8))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    service = Service(classifiers, settings)
    middleware = [Middleware(MetricsMiddleware, metrics=service.metrics)]
    if settings.api_key is not None:  # before the body limits: a stranger learns nothing, sends nothing more
        middleware.append(Middleware(ApiKeyMiddleware, key=settings.api_key))
    middleware.append(Middleware(RequestLimits, max_body_mb=settings.max_body_mb,
                                 max_inflight_mb=settings.max_inflight_mb, body_timeout_s=settings.body_timeout_s))
    handlers = {**ERROR_HANDLERS, QueueFull: json_error(503, {"Retry-After": "1"})}
    app = Starlette(routes=service.routes(), middleware=middleware, exception_handlers=handlers,
                    lifespan=service.lifespan)
    app.state.service = service
    return app
