"""Bounded read-ahead: work on the next items in threads while the caller uses the current ones."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

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
