"""Bounded read-ahead: work on the next items in threads while the caller uses the current ones
(``prefetched``: a pool maps a function; ``Prefetch``: one thread runs an iterator)."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

T, R = TypeVar("T"), TypeVar("R")


def prefetched(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterator[T], ahead: int) -> Iterator[list[R]]:
    """Map ``fn`` over ``items`` in ``pool`` with at most ``ahead`` in flight; yield results in order,
    in lists of ``ahead // 2``, so memory stays bounded however many items there are.

    Example:
        >>> with ThreadPoolExecutor(2) as pool:
        ...     list(prefetched(pool, lambda x: x * x, iter(range(5)), ahead=4))
        [[0, 1], [4, 9], [16]]
    """
    batch, pending = max(1, ahead // 2), []
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield [f.result() for f in pending[:batch]]
            del pending[:batch]
    while pending:
        yield [f.result() for f in pending[:batch]]
        del pending[:batch]


_END = object()


class Prefetch:
    """Run an iterator in a daemon thread, ``size`` items ahead; its exceptions surface in ``get``.

    With ``weight``, ``size`` bounds the total weight of the items waiting instead of their number
    (one item is always let through, however heavy): bytes read ahead, say.

    Example:
        >>> with Prefetch(iter(range(3)), size=2) as items:
        ...     list(items)
        [0, 1, 2]
        >>> with Prefetch(iter(["ab", "cde", "f"]), size=4, weight=len) as items:
        ...     list(items)
        ['ab', 'cde', 'f']
    """

    def __init__(self, items: Iterable, size: int, name: str = "prefetch", weight: Callable[[object], int] | None = None):
        self._queue: queue.Queue = queue.Queue(maxsize=0 if weight else max(1, size))
        self._weight, self._size, self._held, self._room = weight, size, 0, threading.Condition()
        self._stop = threading.Event()
        self.done = False  # the iterator is exhausted (or failed): no item will come after those queued
        self._thread = threading.Thread(target=self._run, args=(iter(items),), name=name, daemon=True)
        self._thread.start()

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, raised in its thread
            self._put(_Raised(e))

    def _put(self, item) -> bool:
        if self._weight is not None and item is not _END and not isinstance(item, _Raised):
            weight = self._weight(item)
            with self._room:
                while self._held and self._held + weight > self._size:
                    if self._stop.is_set():
                        return False
                    self._room.wait(0.1)
                self._held += weight
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _taken(self, item) -> None:
        if self._weight is not None:
            with self._room:
                self._held -= self._weight(item)
                self._room.notify()

    def get(self, timeout: float | None = None):
        """The next item; ``queue.Empty`` after ``timeout`` seconds; StopIteration at the end."""
        item = self._queue.get(timeout=timeout)
        if item is _END:
            self.done = True
            self._queue.put(_END)  # stay at the end for later calls
            raise StopIteration
        if isinstance(item, _Raised):
            self.done = True
            self._queue.put(item)
            raise item.error
        self._taken(item)
        return item

    def ready(self, limit: int) -> list:
        """Up to ``limit`` more items that are already waiting (never blocks)."""
        items = []
        while len(items) < limit and not self._queue.empty():
            item = self._queue.queue[0]
            if item is _END or isinstance(item, _Raised):
                break
            items.append(self._queue.get_nowait())
            self._taken(items[-1])
        return items

    def peek_end(self, timeout: float | None = None) -> bool:
        """Wait until the next item is known; True when it is the end (or an error)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.empty():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        head = self._queue.queue[0]
        return head is _END or isinstance(head, _Raised)

    def __iter__(self) -> Iterator:
        while True:
            try:
                yield self.get()
            except StopIteration:
                return

    def close(self, wait: float = 2.0) -> None:
        """Stop the thread (it ends at its next item) and wait for it a little."""
        self._stop.set()
        self._thread.join(timeout=wait)

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Raised:
    error: BaseException
