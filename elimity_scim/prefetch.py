"""The first pages of one listing, fetched while another listing is still read.

Users are read before groups, because memberships are stored against user
numbers. Group pages need not wait for that, though: a `Prefetch` requests the
first pages of the group listing alongside the user pages and keeps their bodies
unparsed, within a byte budget. The group listing later asks for the same
queries and takes these answers instead of sending the requests again, so its
logic, checks and errors stay exactly those of a listing read in one go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError, Future
from functools import partial
from itertools import chain

import orjson
import requests

# A response body as read: a bytearray, which both JSON parsers take without a copy.
Body = bytes | bytearray
Fetched = tuple[requests.Response, Body]
Params = Mapping[str, str | int]
_Key = tuple[tuple[str, str], ...]


def query_key(params: Params | None) -> _Key:
    """Return a hashable form of a query, as it travels (every value a string)."""
    return tuple(sorted((name, str(value)) for name, value in (params or {}).items()))


class Prefetch:
    """Answers to a listing's likely requests, fetched ahead of the listing.

    Index paging: the first page, then (once its totalResults is known) the
    windows the listing will ask for in the same order. Cursor paging: the first
    page and the ones its ``nextCursor`` chain leads to. At most ``parallel``
    requests are out at a time, so the listing under way keeps most of the
    connections, and no more is fetched once ``budget`` bytes of bodies would be
    held or the listing has started to take them.
    """

    def __init__(  # noqa: PLR0913 - one listing's full description
        self,
        *,
        url: str,
        mode: str,
        page_size: int,
        params: Params | None,
        budget: int,
        parallel: int,
        fetch: Callable[[Params], Fetched],
        submit: Callable[[Callable[[], Fetched]], Future[Fetched]],
    ) -> None:
        self.url = url
        self._mode = mode
        self._page_size = page_size
        self._params = dict(params or {})
        self._budget = budget
        self._parallel = max(1, parallel)
        self._fetch = fetch
        self._submit = submit
        self._answers: dict[_Key, Future[Fetched]] = {}
        self._planned: Iterator[Params] = iter(())
        self._in_flight = 0
        self._held = 0
        self._largest = 0
        self._stopped = False
        self._lock = threading.Lock()
        self.sent = 0
        """Requests sent ahead so far."""

    def start(self) -> None:
        """Send the listing's first request."""
        first = "cursor" if self._mode == "cursor" else "startIndex"
        with self._lock:
            self._planned = iter(({first: "" if first == "cursor" else 1},))
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

    def _query(self, position: Params) -> dict[str, str | int]:
        # The listing's own query order (client._index_pages, _cursor_pages).
        return {**self._params, **position, "count": self._page_size}

    def _send_more(self) -> None:
        # Called with the lock held.
        while not self._stopped and self._in_flight < self._parallel:
            expected = (self._in_flight + 1) * self._largest
            if self._largest and self._held + expected > self._budget:
                return
            position = next(self._planned, None)
            if position is None:
                return
            query = self._query(position)
            try:
                answer = self._submit(partial(self._fetch, query))
            except RuntimeError:
                return  # the pool was shut down: the run is over
            self._answers[query_key(query)] = answer
            self._in_flight += 1
            self.sent += 1
            answer.add_done_callback(self._arrived)

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
            if self._stopped:
                return
            if not 200 <= response.status_code < 300:
                self._stopped = True
                return
            if self.sent == 1 or self._mode == "cursor":
                self._plan_after(body)
            self._send_more()

    def _plan_after(self, body: Body) -> None:
        # What the listing asks next: parsed here only for the paging fields (the
        # listing parses the page again when it takes it; at most the budget's
        # bytes are parsed twice).
        try:
            page = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(page, dict):
            return
        fields = {key.lower(): value for key, value in page.items()}
        resources = fields.get("resources")
        cursor = fields.get("nextcursor")
        if self._mode == "cursor":
            if isinstance(cursor, str) and cursor:
                self._planned = iter(({"cursor": cursor},))
            return
        total = _as_int(fields.get("totalresults"))
        if cursor or not isinstance(resources, list) or not resources or total is None:
            return
        step = len(resources)
        if 1 + step > total:
            return
        # As client._parallel_index_pages: every window, then the one past the end.
        windows = chain(range(1 + step, total + 1, step), (total + 1,))
        self._planned = ({"startIndex": start} for start in windows)


def _as_int(value: object) -> int | None:
    # As the listing reads totalResults: a number, or digits in a string.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
