"""Dynamic micro-batching: the images of concurrent requests queue up; a loop per engine takes up
to ``max_batch`` of them at a time and runs them as one batch in that engine's own thread, so the
event loop stays free to take more requests while the engine works.

A batch closes when it is full, when nothing more is on its way, or ``timeout_s`` after its first
image: it waits only while admitted images are still being decoded, so a lone client never pays
the timeout. The queue is bounded: ``max_queue`` counts every admitted image until its request is
answered, and a request that does not fit is refused at once (``QueueFull``: 503, Retry-After).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

Engine = Callable[[np.ndarray], np.ndarray]  # NCHW float32 batch -> (N, classes) probabilities


class QueueFull(Exception):
    """No room in the queue for a request's images; the client should retry a little later."""


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future


@dataclass
class Ticket:
    """Room in the queue for one request's ``n`` images, from admission until its answer."""

    batcher: "MicroBatcher"
    n: int
    queued: bool = False

    async def infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Queue the request's decoded inputs (those that decoded: at most ``n``) and await their
        probability rows, in order. Call once."""
        if not self.queued:
            self.queued = True
            self.batcher._decoded(self.n)
        return await self.batcher._infer(inputs)


class MicroBatcher:
    """Batches images across requests for one or more engines (replicas of one model).

    Args:
        engines: one callable per replica; each only ever runs in its own thread, so an engine
            need not be thread-safe (a CUDA graph, a torch module).
        max_batch: most images per engine call.
        timeout_s: longest a batch waits for more images after its first one.
        max_queue: most images admitted (decoding, waiting or running) at once.
        on_batch: called with (batch size, engine seconds) after every batch, for metrics.

    Example:
        >>> batcher = MicroBatcher([net.probabilities], max_batch=16)  # doctest: +SKIP
        >>> await batcher.start()                                       # in the event loop  # doctest: +SKIP
        >>> with batcher.admit(1) as ticket:  # doctest: +SKIP
        ...     [probs] = await ticket.infer([net.prepare(jpeg_bytes)])
    """

    def __init__(self, engines: Sequence[Engine], *, max_batch: int = 16, timeout_s: float = 0.005,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] | None = None):
        self.engines, self.max_batch, self.timeout_s, self.max_queue = list(engines), max_batch, timeout_s, max_queue
        self.on_batch = on_batch
        self.in_flight = 0  # admitted images not yet answered: what max_queue bounds
        self.decoding = 0   # admitted images not yet queued: a batch waits for these, up to timeout_s
        self._queue: deque[_Item] = deque()
        self._arrival: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._threads: list[ThreadPoolExecutor] = []

    @property
    def queued(self) -> int:
        """Images waiting for an engine."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self, warmup: Sequence[np.ndarray] = ()) -> None:
        """Start one batch loop per engine, first running each ``warmup`` batch through every engine
        (first runs allocate memory and capture graphs: no request should pay for that)."""
        loop = asyncio.get_running_loop()
        self._arrival = asyncio.Event()
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix=f"imgclass-engine-{i}") for i in range(len(self.engines))]
        for engine, thread in zip(self.engines, self._threads):
            for batch in warmup:
                await loop.run_in_executor(thread, engine, batch)
        self._tasks = [asyncio.create_task(self._serve(engine, thread)) for engine, thread in zip(self.engines, self._threads)]

    async def stop(self) -> None:
        """Stop the loops (after the server has drained its requests) and free the engine threads."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for item in self._queue:
            item.future.cancel()
        self._queue.clear()
        for thread in self._threads:
            thread.shutdown(wait=True)

    @contextmanager
    def admit(self, n: int) -> Iterator[Ticket]:
        """Hold room for ``n`` images for the block, or raise QueueFull at once."""
        if self.in_flight + n > self.max_queue:
            raise QueueFull(f"server busy: {self.in_flight} images in flight, room for {self.max_queue}; retry shortly")
        ticket = Ticket(self, n)
        self.in_flight += n
        self.decoding += n
        try:
            yield ticket
        finally:
            self.in_flight -= n
            if not ticket.queued:
                self._decoded(n)

    def _decoded(self, n: int) -> None:
        """``n`` images left the decode stage (queued, or failed): a waiting batch looks again."""
        self.decoding -= n
        if self._arrival is not None:
            self._arrival.set()

    async def _infer(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not inputs:
            return []
        loop = asyncio.get_running_loop()
        items = [_Item(x, loop.create_future()) for x in inputs]
        self._queue.extend(items)
        # A request whose client went away cancels its futures here; the loops skip them.
        return list(await asyncio.gather(*(item.future for item in items)))

    async def _serve(self, engine: Engine, thread: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            start = time.perf_counter()
            try:
                probs = await loop.run_in_executor(thread, _run, engine, [item.x for item in batch])
            except Exception as e:  # the engine failed: every request in the batch hears why
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)
            for item, row in zip(batch, probs):
                if not item.future.done():
                    item.future.set_result(row)

    async def _next_batch(self) -> list[_Item]:
        """Wait for a first image, then for more while any are still decoding, up to max_batch or timeout_s."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            await self._wait_arrival(None)
        deadline = loop.time() + self.timeout_s
        while len(self._queue) < self.max_batch and self.decoding > 0 and (left := deadline - loop.time()) > 0:
            await self._wait_arrival(left)
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        return [item for item in batch if not item.future.done()]

    async def _wait_arrival(self, timeout: float | None) -> None:
        self._arrival.clear()
        try:
            await asyncio.wait_for(self._arrival.wait(), timeout)
        except asyncio.TimeoutError:
            pass


def _run(engine: Engine, inputs: list[np.ndarray]) -> np.ndarray:
    """In the engine's thread: the stacking copy (megabytes) stays off the event loop too."""
    return engine(np.stack(inputs))
