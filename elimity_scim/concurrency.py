"""Bounded, adaptive concurrency for independent SCIM requests."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from functools import partial
from types import TracebackType
from typing import Protocol, TypeVar

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


class Submitter(Protocol):
    """Anything that runs calls in the background: a pool of worker threads."""

    def submit(self, function: Callable[[], _R], /) -> Future[_R]:
        """Schedule a call; return its future."""


_Job = tuple[Future[object], Callable[[], object]]


class DaemonPool:
    """A fixed number of daemon worker threads that run calls in order of arrival.

    Unlike ``ThreadPoolExecutor``, whose workers the interpreter waits for at
    exit, a run that fails while requests are still out (retrying, or waiting for
    a slow server) ends at once; those requests end with the process. Its workers
    end after their current call once the pool is shut down.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._workers = max(1, workers)
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, function: Callable[[], _R], /) -> Future[_R]:
        """Schedule ``function()``; raise ``RuntimeError`` once shut down."""
        future: Future[_R] = Future()
        with self._lock:
            if self._closed:
                msg = "the pool is shut down"
                raise RuntimeError(msg)
            self._jobs.put((future, function))  # type: ignore[arg-type]
            if len(self._threads) < self._workers:
                number = len(self._threads)
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{number}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self) -> None:
        """Cancel the calls not started and let every worker end."""
        with self._lock:
            self._closed = True
            workers = len(self._threads)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in range(workers):
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            _run(*job)
            del job  # hold nothing between calls: a result may be a large page


def _run(future: Future[object], function: Callable[[], object]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = function()
    except BaseException as exc:  # noqa: BLE001 - handed to the future
        future.set_exception(exc)
    else:
        future.set_result(result)


def ordered_map(
    pool: Submitter,
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
            pending.append(pool.submit(partial(function, item)))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
