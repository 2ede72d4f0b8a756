"""Read resources from a SCIM 2.0 service provider (RFC 7644)."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ProtocolError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from elimity_scim.concurrency import DaemonPool, Throttle, ordered_map
from elimity_scim.connector.http import transport_reason, without_query
from elimity_scim.diagnostics import Warnings
from elimity_scim.errors import (
    ScimPagingError,
    ScimPayloadError,
    ScimRequestError,
)
from elimity_scim.prefetch import Body, PageFields, Params, Prefetch

logger = logging.getLogger(__name__)


class _WithoutQueryStrings(logging.Filter):
    """Drops query strings from urllib3's log lines.

    urllib3 logs each retry with the request's path and query (attribute lists,
    filters with ids); this connector names URLs without their query everywhere.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                without_query(arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_WithoutQueryStrings())

JsonObject = dict[str, object]
PagingMode = Literal["index", "cursor"]

_T = TypeVar("_T")
_R = TypeVar("_R")

ACCEPT = "application/scim+json, application/json"
# Statuses worth another attempt: rate limits and overload (RFC 7644 §3.12 lists
# 429 and 503; providers such as Slack also signal overload with 500).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_EMPTY_CURSOR_PAGES = 10
_MAX_BARREN_PAGES = 3
_BODY_DEADLINE_FACTOR = 4
_SWITCHED = -1  # an index listing that the server turned into cursor paging
_COMPLETE = -2  # an index listing whose end was confirmed


@dataclass(frozen=True)
class ClientSettings:
    """Operational limits of a SCIM client."""

    timeout: float = 60.0
    page_size: int = 100
    retry_attempts: int = 5
    retry_backoff: float = 1.0
    retry_after_max: float = 120.0
    max_response_bytes: int = 128 * 1024 * 1024
    concurrency: int = 4
    max_resources: int = 5_000_000
    verify: bool | str = True
    cert: tuple[str, str] | None = None


@dataclass(frozen=True)
class Paging:
    """How a server pages its lists: by index or by cursor, and the page size."""

    mode: PagingMode
    page_size: int
    cursor_supported: bool = False
    look_ahead: int | None = None
    """Most pages fetched ahead of the reader; ``None``: concurrency + 2."""
    memory_budget: int | None = None
    """Bytes of pages that may wait ahead, judged by the first page's size."""


class IdSet(Protocol):
    """The ids a listing has brought so far: a ``set[str]`` or anything like it."""

    def __contains__(self, item: object) -> bool:
        """Tell whether an id was seen."""

    def __len__(self) -> int:
        """Return how many ids were seen."""

    def add(self, item: str) -> None:
        """Note an id as seen."""


@dataclass
class Listing:
    """What one listing of an endpoint brought, for checks after the last page."""

    seen: IdSet = field(default_factory=lambda: set[str]())
    total: int | None = None
    pages: int = 0
    skipped: int = 0
    quiet: bool = False
    barren: int = 0
    """Pages in a row that brought entries but no new resource."""
    near_end: Callable[[], None] | None = None
    announced: bool = False
    """Whether ``near_end`` was called."""


class RequestStats:
    """Thread-safe counters of requests, retries and 429 answers."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"requests": 0, "retries": 0, "throttled": 0}
        self._lock = threading.Lock()

    def count(self, name: str) -> None:
        """Add one to a counter."""
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1


class ClientClosedError(Exception):
    """The client was closed while a request of it was still being retried."""


class RetryAfterTooLongError(Exception):
    """The server asked to wait longer than the configured maximum."""

    def __init__(self, seconds: float, status: int) -> None:
        super().__init__(f"Retry-After {seconds:.0f} s")
        self.seconds = seconds
        self.status = status


class ScimRetry(Retry):
    """urllib3's retry policy, reporting each retry and capping ``Retry-After``."""

    on_retry: Callable[[int | None], None] | None = None
    wait_limit: float = 120.0
    closed: threading.Event | None = None
    """Set when the client is closed: a retry waiting for its turn gives up."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: object = None,
        _stacktrace: object = None,
    ) -> ScimRetry:
        """Count one failed attempt and tell the observer about it."""
        if self.on_retry is not None:
            self.on_retry(response.status if response is not None else None)
        retry = super().increment(method, url, response, error, _pool, _stacktrace)  # type: ignore[arg-type]
        if response is not None:
            # Another attempt follows, and urllib3 first reads what is left of this
            # answer's body to reuse the connection: with no deadline, so a body
            # that trickles would hold the request forever. Give up the connection
            # instead; the next attempt opens a new one.
            response.shutdown()
        return retry

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Wait before the next attempt, as urllib3 does, unless the client closes.

        A request still out when a run fails would otherwise wake up and send
        again (with the credentials) after the run has given up.
        """
        seconds = None
        if self.respect_retry_after_header and response is not None:
            seconds = self.get_retry_after(response)
        if not seconds:
            seconds = self.get_backoff_time()
        if self.closed is None:
            time.sleep(max(seconds, 0))
        elif self.closed.wait(max(seconds, 0)):  # True once set, even at 0 s
            raise ClientClosedError

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        """Return the server's ``Retry-After``, refusing waits beyond the cap."""
        try:
            seconds = super().get_retry_after(response)
        except InvalidHeader:
            return None  # an unreadable Retry-After falls back to backoff
        if seconds is not None and seconds > self.wait_limit:
            raise RetryAfterTooLongError(seconds, response.status)
        return seconds


class ScimClient:
    """A SCIM 2.0 client for one service provider, with retries and paging."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None,
        password: str,
        settings: ClientSettings,
        warnings: Warnings | None = None,
        on_retry: Callable[[int | None], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.warnings = warnings if warnings is not None else Warnings()
        self.throttle = Throttle(settings.concurrency)
        self.stats = RequestStats()
        self._on_retry = on_retry
        self._closed = threading.Event()
        self.retry = _retry_policy(settings, self._retried, self._closed)
        self._session = _session(username, password, settings, self.retry)
        self._secrets = _credential_forms(username, password)
        self._pool: DaemonPool | None = None
        self._prefetch: Prefetch | None = None

    def close(self) -> None:
        """Release pooled connections and worker threads.

        Requests still out (a listing that failed while others were under way)
        make no further attempt.
        """
        self._closed.set()
        self.forget_prefetched()
        if self._pool is not None:
            self._pool.shutdown()
        self._session.close()

    def map_ordered(
        self,
        function: Callable[[_T], _R],
        items: Iterable[_T],
        look_ahead: int | None = None,
    ) -> Iterator[_R]:
        """Run independent requests concurrently; yield results in input order.

        At most ``look_ahead`` results (default: concurrency + 2) wait ahead of the
        reader, which bounds memory.
        """
        if self.settings.concurrency <= 1:
            return map(function, items)
        window = look_ahead or self.settings.concurrency + 2
        return ordered_map(self._executor(), function, items, window=window)

    def prefetch(
        self, endpoint: str, paging: Paging, params: Params | None, budget: int
    ) -> None:
        """Start fetching the first pages of a listing that will be read next.

        Meant for the moment the listing under way has sent its last request:
        up to ``budget`` bytes of the next listing's pages are fetched with half
        the concurrency, and kept unparsed until that listing asks for them.
        Only index paging is predictable enough (a cursor handed out early could
        expire), and nothing is fetched ahead with concurrency 1.
        """
        self.forget_prefetched()
        if (
            self.settings.concurrency <= 1
            or paging.mode != "index"
            or self._closed.is_set()
        ):
            return
        url = self.url(endpoint)
        self._prefetch = Prefetch(
            url=url,
            page_size=paging.page_size,
            params=params,
            budget=budget,
            parallel=self.settings.concurrency // 2,
            pages=self.settings.concurrency + 2,
            fetch=partial(self._fetch, url),
            submit=self._executor().submit,
            read_page=_page_fields,
        )
        self._prefetch.start()

    def forget_prefetched(self) -> None:
        """Stop fetching ahead and drop the pages that no listing took."""
        if self._prefetch is not None:
            self._prefetch.stop()
            self._prefetch = None

    def _executor(self) -> DaemonPool:
        if self._pool is None:
            self._pool = DaemonPool(self.settings.concurrency, "scim")
        return self._pool

    def _retried(self, status: int | None) -> None:
        self.stats.count("retries")
        if status in (429, 503):
            self.throttle.overloaded()
        if status == 429:
            self.stats.count("throttled")
        if self._on_retry is not None:
            self._on_retry(status)

    def url(self, path: str) -> str:
        """Return the absolute URL of an endpoint path such as ``Users``."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def get(
        self,
        path: str,
        params: Params | None = None,
        *,
        end_statuses: tuple[int, ...] = (),
    ) -> JsonObject | None:
        """GET a JSON object; ``None`` when the status is one of ``end_statuses``."""
        fetched = self.get_bytes(path, params, end_statuses=end_statuses)
        return None if fetched is None else parse_object(*fetched)

    def get_bytes(
        self,
        path: str,
        params: Params | None = None,
        *,
        end_statuses: tuple[int, ...] = (),
    ) -> tuple[requests.Response, Body] | None:
        """GET a successful response body unparsed, for ``parse_object`` later.

        Pages waiting for their turn are held as bytes, several times smaller than
        the parsed objects.
        """
        url = self.url(path)
        prefetch = self._prefetch
        fetched = prefetch.take(url, params) if prefetch is not None else None
        response, body = fetched or self._fetch(url, params)
        if response.status_code in end_statuses:
            return None
        if not 200 <= response.status_code < 300:
            hint = ""
            if response.status_code in RETRY_STATUSES:
                hint = f"gave up after {self.settings.retry_attempts} attempts"
            raise ScimRequestError.from_response(
                response, body, hint=hint, secrets=self._secrets
            )
        return response, body

    def service_provider_config(self) -> JsonObject | None:
        """Return ``/ServiceProviderConfig``, or ``None`` when it is not served."""
        try:
            return self.get("ServiceProviderConfig", end_statuses=(400, 401, 403, 404))
        except (ScimPayloadError, ScimRequestError) as exc:
            logger.info("No usable ServiceProviderConfig: %s", exc)
            return None

    def paging(self, config: JsonObject | None) -> Paging:
        """Choose the paging mode and page size from a ServiceProviderConfig."""
        size = self.settings.page_size
        lowered = _lowered(config or {})
        pagination = _lowered(_as_object(lowered.get("pagination")))
        filter_ = _lowered(_as_object(lowered.get("filter")))
        for cap in (filter_.get("maxresults"), pagination.get("maxpagesize")):
            number = _as_int(cap)
            if number is not None and number > 0:
                size = min(size, number)
        cursor = _as_bool(pagination.get("cursor")) is True
        index = _as_bool(pagination.get("index")) is not False
        default = str(pagination.get("defaultpaginationmethod", "")).lower()
        mode: PagingMode = (
            "cursor" if cursor and (not index or default == "cursor") else "index"
        )
        return Paging(mode=mode, page_size=size, cursor_supported=cursor)

    def iter_resources(
        self,
        endpoint: str,
        paging: Paging,
        params: Params | None = None,
        seen: IdSet | None = None,
        near_end: Callable[[], None] | None = None,
    ) -> Iterator[JsonObject]:
        """Yield every resource of an endpoint once, checking the listing is whole.

        ``seen`` collects the ids; pass a container the caller keeps anyway, so that
        a large listing is not held twice. ``near_end`` is called once the listing
        has handed its last request to the pool (only a listing whose pages are
        fetched concurrently knows that in advance), for example to `prefetch`.
        """
        listing = Listing(near_end=near_end)
        if seen is not None:
            listing.seen = seen
        for page in self.iter_pages(endpoint, paging, params, listing):
            yield from page
        read = len(listing.seen) + listing.skipped
        if listing.total is not None and read < listing.total:
            self._goes_on(listing)
            self._confirm_short_listing(endpoint, paging, params, listing)

    def iter_pages(
        self,
        endpoint: str,
        paging: Paging,
        params: Params | None,
        listing: Listing,
    ) -> Iterator[list[JsonObject]]:
        """Yield the new resources of each page of one listing."""
        if paging.mode == "cursor":
            yield from self._cursor_pages(endpoint, paging, params or {}, listing, "")
        else:
            yield from self._index_pages(endpoint, paging, params or {}, listing)

    def _index_pages(
        self, endpoint: str, paging: Paging, params: Params, listing: Listing
    ) -> Iterator[list[JsonObject]]:
        # RFC 7644 §3.4.2.4: 1-based startIndex. Servers differ on totalResults and
        # itemsPerPage, so advance by what arrived and confirm the end once.
        query = {**params, "startIndex": 1, "count": paging.page_size}
        fetched = self.get_bytes(endpoint, query)
        assert fetched is not None  # noqa: S101 - no end statuses were given
        if paging.memory_budget is not None:
            # Pages of big groups are big: let fewer of them wait when they are.
            ahead = paging.memory_budget // max(len(fetched[1]), 1)
            paging = replace(
                paging, look_ahead=max(2, min(ahead, self.settings.concurrency + 2))
            )
        resources, total, next_cursor = self._page(parse_object(*fetched), endpoint)
        del fetched
        listing.pages += 1
        # Recorded before any early end, so that a listing that ends short of what
        # the server announced is read again (see iter_resources).
        listing.total = _max(listing.total, total)
        fresh, _ = self._fresh(resources, listing, endpoint)
        if fresh:
            yield fresh
        if not resources:
            return
        if next_cursor:
            yield from self._switch_to_cursor(
                endpoint, paging, params, listing, next_cursor
            )
            return
        listing.total = _max(listing.total, total)
        start = 1 + len(resources)
        if self.settings.concurrency > 1 and listing.total and start <= listing.total:
            start = yield from self._parallel_index_pages(
                endpoint, paging, params, listing, start, len(resources)
            )
        if start in (_SWITCHED, _COMPLETE):
            return
        self._goes_on(listing)
        yield from self._sequential_index_pages(
            endpoint, paging, params, listing, start
        )

    def _parallel_index_pages(
        self,
        endpoint: str,
        paging: Paging,
        params: Params,
        listing: Listing,
        start: int,
        step: int,
    ) -> Generator[list[JsonObject], None, int]:
        # Once the total is known, the remaining windows are independent requests.
        # The first page's length is the server's real page cap.
        total = listing.total or 0
        # The request past the last page, which confirms the end (RFC 7644 gives no
        # other sign), goes out with the others instead of after them.
        confirm = total + 1

        def fetch(index: int) -> tuple[int, tuple[requests.Response, Body] | None]:
            query = {**params, "startIndex": index, "count": paging.page_size}
            end = (400, 404) if index == confirm else ()
            return index, self.get_bytes(endpoint, query, end_statuses=end)

        covered = start
        # Lazily: a lying totalResults must not cost memory.
        windows = chain(range(start, confirm, step), (confirm,), _announcing(listing))
        for index, fetched in self.map_ordered(fetch, windows, paging.look_ahead):
            if index == confirm and covered != confirm:
                break  # pages were short; the sequential reader confirms the end
            if fetched is None:
                return _confirmed_end(listing, confirm)
            resources, page_total, _ = self._page(parse_object(*fetched), endpoint)
            del fetched
            listing.pages += 1
            listing.total = _max(listing.total, page_total)
            if not resources:
                if index == confirm:
                    return _confirmed_end(listing, confirm)
                break  # the listing shrank; the sequential reader confirms the end
            yield self._checked_fresh(
                resources, listing, endpoint, f"the page at startIndex {index}"
            )
            covered = index + len(resources)
            if len(resources) < step and covered <= total:
                # A short page in the middle: read the gap before moving on.
                self._goes_on(listing)
                covered = yield from self._sequential_index_pages(
                    endpoint, paging, params, listing, covered, stop=index + step
                )
                if covered == _SWITCHED:
                    return _SWITCHED
        return covered

    def _goes_on(self, listing: Listing) -> None:
        # A listing that goes on after it announced its end (its totalResults was
        # too low, a page came back short, its length is in doubt): pages fetched
        # ahead for the next listing would be older than that listing's own by
        # the time it reads them, and a directory that changed in between would
        # be combined from two states. Drop them; the next listing asks again.
        if listing.announced:
            self.forget_prefetched()

    def _sequential_index_pages(
        self,
        endpoint: str,
        paging: Paging,
        params: Params,
        listing: Listing,
        start: int,
        stop: int | None = None,
    ) -> Generator[list[JsonObject], None, int]:
        while stop is None or start < stop:
            confirming = listing.total is not None and start > listing.total
            query = {**params, "startIndex": start, "count": paging.page_size}
            end = (400, 404) if confirming else ()
            body = self.get(endpoint, query, end_statuses=end)
            if body is None:
                break
            resources, total, next_cursor = self._page(body, endpoint)
            listing.pages += 1
            if not resources:
                break
            yield self._checked_fresh(
                resources, listing, endpoint, f"the page at startIndex {start}"
            )
            if next_cursor:
                yield from self._switch_to_cursor(
                    endpoint, paging, params, listing, next_cursor
                )
                return _SWITCHED
            start += len(resources)
            listing.total = _max(listing.total, total)
        return start

    def _switch_to_cursor(
        self,
        endpoint: str,
        paging: Paging,
        params: Params,
        listing: Listing,
        cursor: str,
    ) -> Iterator[list[JsonObject]]:
        # RFC 9865: the server pages by cursor even though we asked by index.
        logger.info("%s returned nextCursor; following cursors", endpoint)
        yield from self._cursor_pages(endpoint, paging, params, listing, cursor)

    def _checked_fresh(
        self, resources: list[object], listing: Listing, endpoint: str, page: str
    ) -> list[JsonObject]:
        # ``page`` names the page in the error: "the page at startIndex 3".
        fresh, identified = self._fresh(resources, listing, endpoint)
        if identified and not fresh:
            msg = (
                f"paging is broken at {self.url(endpoint)}: {page} repeats "
                f"{len(resources)} resources already read"
            )
            raise ScimPagingError(msg)
        self._count_barren(listing, endpoint, fresh=bool(fresh), entries=resources)
        return fresh

    def _count_barren(
        self, listing: Listing, endpoint: str, *, fresh: bool, entries: list[object]
    ) -> None:
        # Pages of entries that are all unusable (no id, not objects) prove nothing
        # by themselves, but a run of them means the server pages in circles.
        listing.barren = 0 if fresh or not entries else listing.barren + 1
        if listing.barren >= _MAX_BARREN_PAGES:
            msg = (
                f"paging is broken at {self.url(endpoint)}: {listing.barren} pages "
                "in a row brought entries but no new resource"
            )
            raise ScimPagingError(msg)

    def _cursor_pages(
        self,
        endpoint: str,
        paging: Paging,
        params: Params,
        listing: Listing,
        cursor: str,
    ) -> Iterator[list[JsonObject]]:
        # RFC 9865 §2: an empty cursor asks for the first page; the last page has no
        # nextCursor. startIndex never goes with cursor.
        empty_pages = 0
        while True:
            query = {**params, "cursor": cursor, "count": paging.page_size}
            body = self.get(endpoint, query)
            assert body is not None  # noqa: S101 - no end statuses were given
            resources, total, next_cursor = self._page(body, endpoint)
            listing.pages += 1
            listing.total = _max(listing.total, total)
            fresh = self._checked_fresh(resources, listing, endpoint, "a cursor page")
            if fresh:
                yield fresh
            empty_pages = 0 if resources else empty_pages + 1
            if not next_cursor:
                return
            if next_cursor == cursor or empty_pages >= _MAX_EMPTY_CURSOR_PAGES:
                msg = (
                    f"paging is broken at {self.url(endpoint)}: nextCursor does not "
                    "advance"
                )
                raise ScimPagingError(msg)
            cursor = next_cursor

    def _page(
        self, body: JsonObject, endpoint: str
    ) -> tuple[list[object], int | None, str | None]:
        # RFC 7643 §2.1: attribute names are case-insensitive, ListResponse included.
        lowered = _lowered(body)
        raw = lowered.get("resources")
        if raw is None:
            raw = []  # RFC 7644 §3.4.2: Resources may be absent when empty
        if not isinstance(raw, list):
            msg = f"the list response of {self.url(endpoint)} has no Resources array"
            raise ScimPayloadError(msg)
        total_raw = lowered.get("totalresults")
        total = _as_int(total_raw)
        if isinstance(total_raw, str) and total is not None:
            self.warnings.add("paging fields sent as strings")
        next_cursor = lowered.get("nextcursor")
        return raw, total, next_cursor if isinstance(next_cursor, str) else None

    def _fresh(
        self, entries: list[object], listing: Listing, endpoint: str
    ) -> tuple[list[JsonObject], int]:
        # Returns the new resources and how many entries had an id at all: a page
        # of entries without ids is malformed, not a sign of broken paging.
        fresh = []
        identified = 0
        seen = listing.seen
        # A page that cannot reach maxResources needs no check per entry.
        capped = (
            len(seen) + listing.skipped + len(entries) > self.settings.max_resources
        )
        for resource in entries:
            if capped and len(seen) + listing.skipped >= self.settings.max_resources:
                msg = (
                    f"{self.url(endpoint)} lists more than maxResources "
                    f"({self.settings.max_resources}) resources; raise the setting if "
                    "the directory is really that large"
                )
                raise ScimPagingError(msg)
            if not isinstance(resource, dict):
                self._skip(listing, f"list entries of {endpoint} that are not objects")
                continue
            resource_id = resource_id_of(resource)
            if resource_id is None:
                self._skip(listing, f"{endpoint} without an id")
                continue
            identified += 1
            if resource_id in seen:
                continue
            seen.add(resource_id)
            fresh.append(resource)
        return fresh, identified

    def _skip(self, listing: Listing, what: str) -> None:
        listing.skipped += 1
        if not listing.quiet:
            self.warnings.add(f"{what}, skipped")

    def _confirm_short_listing(
        self, endpoint: str, paging: Paging, params: Params | None, first: Listing
    ) -> None:
        # A server that over-counts looks like paging that lost its place; only a
        # second, identical reading tells them apart.
        ids: set[str] = set()
        second = Listing(seen=ids, quiet=True)
        for _ in self.iter_pages(
            endpoint, paging, {**(params or {}), "attributes": "id"}, second
        ):
            pass
        changed = len(second.seen) != len(first.seen) or any(
            resource_id not in first.seen for resource_id in ids
        )
        if paging.mode == "index" and not changed:
            self._check_zero_based(endpoint, paging, params, first)
        if changed:
            msg = (
                f"the listing of {self.url(endpoint)} is unstable: two readings gave "
                f"{len(first.seen)} and {len(second.seen)} resources with different "
                f"ids (the server reports {first.total})"
            )
            raise ScimPagingError(msg)
        logger.warning(
            "%s reports totalResults %d but lists %d resources, twice the same; "
            "accepting the listing",
            endpoint,
            first.total,
            len(first.seen),
        )
        self.warnings.add(f"{endpoint} listing shorter than totalResults")

    def _check_zero_based(
        self, endpoint: str, paging: Paging, params: Params | None, first: Listing
    ) -> None:
        # RFC 7644 §3.4.2.4: startIndex is 1-based and a value below 1 means 1. A
        # server that counts from 0 hides its first resource from a reader that
        # starts at 1 and looks like one that over-counts; startIndex=0 tells.
        query = {**(params or {}), "startIndex": 0, "count": paging.page_size}
        body = self.get(endpoint, query, end_statuses=(400, 404))
        resources, _, _ = self._page(body or {}, endpoint)
        ids = [resource_id_of(r) for r in resources if isinstance(r, dict)]
        hidden = [i for i in ids if i is not None and i not in first.seen]
        if hidden:
            msg = (
                f"{self.url(endpoint)} seems to count startIndex from 0: reading from "
                f"1 misses {len(hidden)} resource(s) such as {hidden[0]!r}"
            )
            raise ScimPagingError(msg)

    def _fetch(self, url: str, params: Params | None) -> tuple[requests.Response, Body]:
        retry = self.retry
        while True:
            self.stats.count("requests")
            with self.throttle:
                response = self._send(url, params)
                try:
                    with response:
                        return response, self._read_body(response, url)
                except requests.RequestException as exc:
                    # The body failed after the headers (cut short, stalled, reset):
                    # urllib3's retries are over by then, so apply the same policy.
                    error = ProtocolError(transport_reason(exc))
                    try:
                        retry = retry.increment("GET", url, error=error)
                    except MaxRetryError:
                        reason = transport_reason(exc)
                        raise ScimRequestError(url, None, reason) from exc
            retry.sleep()

    def _send(self, url: str, params: Params | None) -> requests.Response:
        try:
            # verify and cert per request: set on the session only, they would lose
            # to REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE from the environment.
            return self._session.get(
                url,
                params=params,
                timeout=self.settings.timeout,
                stream=True,
                verify=self.settings.verify,
                cert=self.settings.cert,
            )
        except RetryAfterTooLongError as exc:
            hint = (
                f"the server asked to wait {exc.seconds:.0f} s, longer than the "
                f"configured maximum of {self.settings.retry_after_max:.0f} s"
            )
            raise ScimRequestError(url, exc.status, None, hint=hint) from exc
        except requests.RequestException as exc:
            raise ScimRequestError(url, None, transport_reason(exc)) from exc

    def _read_body(self, response: requests.Response, url: str) -> Body:
        # requestTimeout bounds each wait for bytes; a server trickling bytes could
        # still hold a response forever, so the whole body gets a deadline too: a
        # timer shuts the socket down, which ends a read blocked in this thread.
        aborted = threading.Event()

        def abort() -> None:
            aborted.set()
            response.raw.shutdown()

        timer = threading.Timer(_BODY_DEADLINE_FACTOR * self.settings.timeout, abort)
        timer.daemon = True
        timer.start()
        try:
            return self._read_chunks(response, url)
        except Exception as exc:
            if aborted.is_set():
                msg = "Read timed out: the whole response took too long"
                raise requests.exceptions.ReadTimeout(msg) from exc
            raise
        finally:
            timer.cancel()

    def _read_chunks(self, response: requests.Response, url: str) -> Body:
        # One growing buffer, returned as it is: joining a list of chunks would
        # hold every page twice for a moment (9 MB for the largest group page of
        # the million-user benchmark). Both parsers take a bytearray.
        limit = self.settings.max_response_bytes
        body = bytearray()
        for chunk in response.iter_content(chunk_size=1 << 16):
            if len(body) + len(chunk) > limit:
                msg = (
                    f"the response of {without_query(url)} is larger than the "
                    f"limit of {limit} bytes"
                )
                raise ScimPayloadError(msg)
            body += chunk
        return body


def _confirmed_end(listing: Listing, confirm: int) -> int:
    # The request past the end went out with the last pages, so the server may
    # have answered it before resources were added ahead of them, pushing the
    # last ones past where it looked. A later page that counts that many sends
    # the sequential reader on from there; otherwise the listing is complete.
    return confirm if (listing.total or 0) >= confirm else _COMPLETE


def _announcing(listing: Listing) -> Iterator[int]:
    # Nothing to iterate: calls back when reached, after the last window.
    listing.announced = True
    if listing.near_end is not None:
        listing.near_end()
    yield from ()


def resource_id_of(resource: Mapping[str, object]) -> str | None:
    """Return a resource's ``id`` as a non-empty string, or ``None``."""
    value = resource.get("id")
    if value is None:
        value = _lowered(resource).get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value else None


def parse_object(response: requests.Response, body: Body) -> JsonObject:
    """Parse a response body that must be a JSON object, or say what it is."""
    url = response.url
    content_type = response.headers.get("Content-Type", "no Content-Type")
    try:
        parsed = _loads(body)
    except (ValueError, RecursionError) as exc:
        looks_html = "html" in content_type.lower() or body.lstrip()[:1] == b"<"
        what = "an HTML page, not SCIM JSON" if looks_html else "not valid JSON"
        msg = (
            f"the response of {without_query(url)} (status {response.status_code}, "
            f"{content_type}) is {what}"
        )
        if looks_html:
            msg += "; is the base URL right, or is a login page in the way?"
        raise ScimPayloadError(msg) from exc
    if not isinstance(parsed, dict):
        msg = (
            f"the response of {without_query(url)} ({content_type}) is JSON but not "
            "an object"
        )
        raise ScimPayloadError(msg)
    return parsed


def _page_fields(body: Body) -> PageFields | None:
    # The paging fields of a list response, or None when it is none; quietly:
    # the listing reads the page again, with its checks and warnings.
    try:
        page = _loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(page, dict):
        return None
    fields = _lowered(page)
    resources = fields.get("resources")
    count = len(resources) if isinstance(resources, list) else 0
    return count, _as_int(fields.get("totalresults")), bool(fields.get("nextcursor"))


def _loads(body: Body) -> object:
    # orjson parses pages about twice as fast; anything it refuses (NaN, huge
    # integers, lone surrogates, deep nesting) goes to the stdlib parser, whose
    # verdict is the one that counts.
    try:
        parsed: object = orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)
    return parsed


def _session(
    username: str | None, password: str, settings: ClientSettings, retry: Retry
) -> requests.Session:
    session = requests.Session()
    session.headers["Accept"] = ACCEPT
    session.headers["Authorization"] = authorization(username, password)
    session.verify = settings.verify
    if settings.verify is False:
        # The source logs one warning per run instead of one per request.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    session.cert = settings.cert
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=32)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def authorization(username: str | None, password: str) -> str:
    """Return the Authorization header: Basic with a username, else Bearer."""
    if not username:
        return f"Bearer {password}"
    # RFC 7617 §2.1: UTF-8, so that any password can be sent.
    pair = f"{username}:{password}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


def _credential_forms(username: str | None, password: str) -> tuple[str, ...]:
    # Every form in which the credentials travel, longest first.
    forms = [password, authorization(username, password).partition(" ")[2]]
    return tuple(sorted({f for f in forms if len(f) >= 4}, key=len, reverse=True))


def _retry_policy(
    settings: ClientSettings,
    on_retry: Callable[[int | None], None] | None,
    closed: threading.Event | None = None,
) -> ScimRetry:
    policy = type(
        "BoundScimRetry",
        (ScimRetry,),
        {
            "on_retry": staticmethod(on_retry) if on_retry else None,
            "wait_limit": settings.retry_after_max,
            "closed": closed,
        },
    )
    retry: ScimRetry = policy(
        total=max(settings.retry_attempts - 1, 0),
        redirect=5,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=settings.retry_backoff,
        backoff_max=max(settings.retry_after_max, settings.retry_backoff),
        backoff_jitter=settings.retry_backoff,
        raise_on_status=False,
        respect_retry_after_header=True,
        retry_after_max=10**9,  # never clamp: get_retry_after refuses long waits
    )
    return retry


def _lowered(value: Mapping[str, object]) -> dict[str, object]:
    return {key.lower(): item for key, item in value.items()}


def _as_object(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _max(current: int | None, new: int | None) -> int | None:
    if new is None:
        return current
    return new if current is None else max(current, new)


def host_of(url: str) -> str:
    """Return the host name of a URL, lower-cased."""
    return (urlsplit(url).hostname or "").lower()
