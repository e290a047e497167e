"""``imgclass serve``: an HTTP inference server over ``Classifier`` (Starlette on uvicorn).

A REST route (``POST /v1/classify``, the JSON of ``imgclass classify --json``), the Open Inference
Protocol v2 (KServe, Triton: ``tritonclient.http`` works unchanged), Prometheus ``/metrics`` and an
upload page; requests are micro-batched across clients (batcher.py). Needs the ``serve`` extra.

Example:
    >>> from imgclass import Classifier
    >>> from imgclass.serve import Settings, create_app
    >>> app = create_app([Classifier()], Settings(max_batch=16, batch_timeout_ms=5))  # doctest: +SKIP
"""
from .app import Settings, create_app
from .batcher import MicroBatcher, QueueFull

__all__ = ["Settings", "create_app", "MicroBatcher", "QueueFull"]
