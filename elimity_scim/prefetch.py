"""The first pages of one listing, fetched while the listing before it ends.

Users are read before groups, because memberships are stored against user
numbers. The last user pages leave connections idle, though, while they arrive
and are mapped: a `Prefetch` fills them with the first pages of the group
listing and keeps their bodies unparsed. The group listing later asks for the
same queries and takes these answers instead of sending the requests again, so
its logic, checks and errors stay exactly those of a listing read in one go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError, Future
from functools import partial
from itertools import chain

import requests

# A response body as read: a bytearray, which both JSON parsers take without a copy.
Body = bytes | bytearray
Fetched = tuple[requests.Response, Body]
Params = Mapping[str, str | int]
PageFields = tuple[int, int | None, bool]
"""Of a list response: how many resources, totalResults, and whether a
nextCursor is set."""
_Key = tuple[tuple[str, str], ...]


def query_key(params: Params | None) -> _Key:
    """Return a hashable form of a query, as it travels (every value a string)."""
    return tuple(sorted((name, str(value)) for name, value in (params or {}).items()))


class Prefetch:
    """Answers to an index-paged listing's first requests, fetched ahead of it.

    The first page, then (once its ``totalResults`` is known) the windows the
    listing will ask for, in the same order and with the same queries. At most
    ``parallel`` requests are out at a time, at most ``pages`` are fetched, and
    none once ``budget`` bytes of bodies would be held, a page comes back short
    (the listing reads the gap itself) or the listing starts to take answers.
    """

    def __init__(  # noqa: PLR0913 - one listing's full description
        self,
        *,
        url: str,
        page_size: int,
        params: Params | None,
        budget: int,
        parallel: int,
        pages: int,
        fetch: Callable[[Params], Fetched],
        submit: Callable[[Callable[[], Fetched]], Future[Fetched]],
        read_page: Callable[[Body], PageFields | None],
    ) -> None:
        self.url = url
        self._page_size = page_size
        self._params = dict(params or {})
        self._budget = budget
        self._parallel = max(1, parallel)
        self._pages = pages
        self._fetch = fetch
        self._submit = submit
        self._read_page = read_page
        self._answers: dict[_Key, Future[Fetched]] = {}
        self._planned: Iterator[int] = iter((1,))
        self._step = 0
        self._in_flight = 0
        self._held = 0
        self._largest = 0
        self._stopped = False
        self._lock = threading.Lock()
        self.sent = 0
        """Requests sent ahead so far."""

    def start(self) -> None:
        """Send the listing's first request."""
        self._send_more()

    def take(self, url: str, params: Params | None) -> Fetched | None:
        """Return the answer fetched ahead for this request, or ``None``.

        The first answer taken stops further fetching ahead: the listing has
        started and sends its own requests from then on.
        """
        if url != self.url:
            return None
        with self._lock:
            self._stopped = True
            answer = self._answers.pop(query_key(params), None)
        if answer is None:
            return None
        try:
            # Re-raises what the request raised, in the listing's own place.
            return answer.result()
        except CancelledError:
            return None

    def stop(self) -> None:
        """Send nothing more and drop what was fetched and not taken."""
        with self._lock:
            self._stopped = True
            answers = list(self._answers.values())
            self._answers.clear()
        for answer in answers:
            answer.cancel()

    def _send_more(self) -> None:
        # Callbacks are added outside the lock: an answer that is already in
        # runs its callback at once, in this thread, and that takes the lock.
        for answer in self._submit_more():
            answer.add_done_callback(self._arrived)

    def _submit_more(self) -> list[Future[Fetched]]:
        submitted = []
        with self._lock:
            while not self._stopped and self._in_flight < self._parallel:
                expected = (self._in_flight + 1) * self._largest
                if self.sent >= self._pages or self._held + expected > self._budget:
                    break
                start = next(self._planned, None)
                if start is None:
                    break
                # The listing's own query (client._index_pages).
                query = {**self._params, "startIndex": start, "count": self._page_size}
                try:
                    answer = self._submit(partial(self._fetch, query))
                except RuntimeError:
                    break  # the pool was shut down: the run is over
                self._answers[query_key(query)] = answer
                self._in_flight += 1
                self.sent += 1
                submitted.append(answer)
        return submitted

    def _arrived(self, answer: Future[Fetched]) -> None:
        with self._lock:
            self._in_flight -= 1
            if answer.cancelled() or answer.exception() is not None:
                # The listing meets the error when it asks for this page.
                self._stopped = True
                return
            response, body = answer.result()
            self._held += len(body)
            self._largest = max(self._largest, len(body))
            if self._stopped or not 200 <= response.status_code < 300:
                self._stopped = True
                return
            self._plan_after(body)
        self._send_more()

    def _plan_after(self, body: Body) -> None:
        # What the listing asks next. Read here only for the paging fields (the
        # listing parses the page again when it takes it; at most the budget's
        # bytes are parsed twice).
        count, total, cursor = self._read_page(body) or (0, None, False)
        if cursor or not count or count < self._step:
            # The listing switches to cursors, ends, or reads a gap one page
            # after another: nothing more is predictable.
            self._stopped = True
            return
        if self._step:
            return
        if total is None or 1 + count > total:
            self._stopped = True
            return
        # As client._parallel_index_pages: every window, then the one past the end.
        self._step = count
        self._planned = chain(range(1 + count, total + 1, count), (total + 1,))
