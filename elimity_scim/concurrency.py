"""Bounded, adaptive concurrency for independent SCIM requests."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")

# A limit that has caused an overload is approached again only after this many
# successful requests, so that a rate-limited server sees few refusals.
_PATIENCE = 400


class Throttle:
    """Additive-increase, multiplicative-decrease limit on requests in flight.

    Every 429 or 503 halves the limit; it grows back by one after a streak of
    successes, and only very slowly past the level that last caused an overload.
    """

    def __init__(self, limit: int) -> None:
        self.maximum = max(1, limit)
        self.limit = self.maximum
        self.ceiling = self.maximum
        self.overloads = 0
        self._active = 0
        self._streak = 0
        self._condition = threading.Condition()

    def __enter__(self) -> Throttle:
        with self._condition:
            while self._active >= self.limit:
                self._condition.wait()
            self._active += 1
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._condition:
            self._active -= 1
            if kind is None:
                self._succeeded()
            self._condition.notify_all()

    def overloaded(self) -> None:
        """Note a refusal for overload: halve the limit."""
        with self._condition:
            self.overloads += 1
            self._streak = 0
            if self.limit > 1 or self.ceiling > 1:
                self.ceiling = max(1, min(self.ceiling, self.limit - 1))
                self.limit = max(1, self.limit // 2)

    def _succeeded(self) -> None:
        self._streak += 1
        if self.limit >= self.maximum:
            return
        needed = 25 * self.limit if self.limit < self.ceiling else _PATIENCE
        if self._streak >= needed:
            self._streak = 0
            self.limit += 1


def ordered_map(
    pool: ThreadPoolExecutor,
    function: Callable[[_T], _R],
    items: Iterable[_T],
    window: int,
) -> Iterator[_R]:
    """Apply ``function`` concurrently, yielding results in the order of ``items``.

    At most ``window`` calls run or wait ahead of the consumer, which bounds memory.
    """
    pending: deque[Future[_R]] = deque()
    iterator = iter(items)
    try:
        for item in iterator:
            pending.append(pool.submit(function, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
