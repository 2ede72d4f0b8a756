"""A programmable fake SCIM 2.0 server on 127.0.0.1, for replaying server quirks.

`FakeScim` serves an in-memory directory (user and group dicts given by the test)
at ``/scim/v2``: ``/Users``, ``/Groups``, ``/Users/{id}``, ``/Groups/{id}`` and
``/ServiceProviderConfig``. It pages by index (RFC 7644 §3.4.2.4) and by cursor
(RFC 9865), honours ``attributes`` and ``excludedAttributes``, and answers the two
filters the connector sends (``groups.value eq "<id>"`` on ``/Users`` and
``members.value eq "<id>"`` on ``/Groups``). Plain attributes set per test make it
misbehave the way real servers do (see ``/work/shared/SCIM-QUIRKS.md``); `Fault`s
queued with `FakeScim.fail` replace single answers with errors, dropped
connections, bodies cut short or stalls, pages that skip, repeat or shift resources,
redirects and endless trickles. `Mutation`s queued with `FakeScim.mutate` change the
directory just before a chosen request is answered, and every version of the
directory is kept in `FakeScim.versions`. Every request is recorded, and so is
every fault applied (`FakeScim.applied`).

The *true* memberships are the ``members`` of the group dicts as given; the knobs
``list_members`` and ``get_members`` only change what the server shows.

`read_fake` runs the real ``ScimSource().read`` against a fake with fast retry
settings and without the ``attributes`` probe (``requestAttributes=true`` turns it
on) and returns a `Reading` (entity ids, membership triples, attributes).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import dataclasses
import email.utils
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from elimity_insights_client import Entity

from elimity_scim.connector.config import resolve
from elimity_scim.source import ScimSource
from tests.support.serving import BackgroundServer

HOST = "127.0.0.1"
BASE_PATH = "/scim/v2"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"

Resource = dict[str, Any]
MembersView = Literal["full", "omit", "empty", "users_only"]
FaultAction = Literal[
    "respond",
    "drop",
    "truncate",
    "stall",
    "stall_body",
    "cut",
    "trickle",
    "redirect",
    "skip",
    "repeat",
    "shift",
]
_PAGE_EDITS = ("skip", "repeat", "shift")

_FILTER = re.compile(
    r'^\s*(?P<attribute>groups|members)\.value\s+eq\s+"(?P<value>(?:[^"\\]|\\.)*)"\s*$',
    re.IGNORECASE,
)


def user(user_id: str, user_name: str | None = None, **attributes: Any) -> Resource:
    """Return a SCIM User dict with ``schemas``, ``id`` and ``userName``."""
    resource: Resource = {
        "schemas": [USER_SCHEMA],
        "id": user_id,
        "userName": user_name or f"{user_id}@example.test",
    }
    resource.update(attributes)
    return resource


def group(
    group_id: str, members: Iterable[Mapping[str, Any]] = (), **attributes: Any
) -> Resource:
    """Return a SCIM Group dict; ``members`` as given (see `member`)."""
    resource: Resource = {
        "schemas": [GROUP_SCHEMA],
        "id": group_id,
        "displayName": attributes.pop("displayName", f"Group {group_id}"),
        "members": [dict(m) for m in members],
    }
    resource.update(attributes)
    return resource


def member(
    value: str | None, kind: str | None = None, ref: str | None = None
) -> dict[str, str]:
    """Return one ``members`` entry: ``value``, optional ``type`` and ``$ref``."""
    entry: dict[str, str] = {}
    if value is not None:
        entry["value"] = value
    if kind is not None:
        entry["type"] = kind
    if ref is not None:
        entry["$ref"] = ref
    return entry


def http_date(seconds_from_now: float) -> str:
    """Return an RFC 9110 HTTP-date, e.g. for a ``Retry-After`` header."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    """Path below the base path, URL-decoded, e.g. ``/Users`` or ``/Groups/g 1``."""
    query: dict[str, str]
    """Query parameters (last value wins); blank values are kept (``cursor=``)."""
    headers: dict[str, str]
    raw_path: str = ""
    """Path below the base path as sent, still percent-encoded."""
    raw_query: str = ""


REAL = object()
"""A `Fault` body: the real answer, damaged by the fault's action."""


@dataclass
class Fault:
    """One scheduled misbehaviour, used for the requests it matches.

    ``path`` (below the base path, e.g. ``/Users``) and ``when`` select requests;
    the first ``after`` matching requests are served normally, the next ``times``
    get the fault (``times=None``: all of them). ``action`` is ``respond``
    (``status``, ``headers``, ``body``), ``drop`` (close without answering),
    ``truncate`` (announce the whole body, send half, close), ``stall`` (wait
    ``seconds`` before answering normally) or ``stall_body`` (send headers and
    half the body, then wait ``seconds``).

    More actions: ``cut`` (half the body without a Content-Length, then close, so
    the client cannot tell), ``trickle`` (headers, then the body and endless
    spaces one byte every ``seconds`` until the fake stops), ``redirect``
    (``status`` with a Location of ``location`` plus the request's path and
    query). Page edits change a list page and nothing else: ``skip`` leaves out
    the page's resource at ``position``, ``repeat`` sends it twice, ``shift``
    moves the page's window by ``shift`` resources (negative: repeat resources of
    the page before; positive: skip some).
    """

    status: int = 500
    body: object = b""
    """Bytes or str sent as is; anything else is sent as JSON. ``REAL`` sends the
    answer the server would have given (status, type and body), e.g. to cut a real
    page short."""
    content_type: str | None = "application/scim+json"
    headers: dict[str, str] = field(default_factory=dict)
    action: FaultAction = "respond"
    path: str | None = None
    when: Callable[[RecordedRequest], bool] | None = None
    times: int | None = 1
    after: int = 0
    seconds: float = 0.0
    position: int = 0
    shift: int = 0
    location: str | None = None
    matched: int = 0
    """How many requests matched so far (served normally or not)."""

    def applies(self, request: RecordedRequest) -> bool:
        """Count a request that matches, and tell whether it gets the fault."""
        if self.path is not None and request.path != self.path:
            return False
        if self.when is not None and not self.when(request):
            return False
        self.matched += 1
        position = self.matched - self.after
        if position < 1:
            return False
        return self.times is None or position <= self.times

    def payload(self) -> bytes:
        """Return the body bytes."""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def scim_error(
    status: int, detail: str, scim_type: str | None = None, **options: Any
) -> Fault:
    """Return a fault answering with an RFC 7644 §3.12 error body.

    ``options`` are further `Fault` fields, e.g. ``path``, ``times``, ``after``.
    """
    body: dict[str, object] = {
        "schemas": [ERROR_SCHEMA],
        "status": str(status),
        "detail": detail,
    }
    if scim_type is not None:
        body["scimType"] = scim_type
    return Fault(status=status, body=body, **options)


@dataclass
class Mutation:
    """A change of the directory, made just before the server answers a request.

    ``change`` runs (under the fake's lock) before the ``at``-th request that
    matches ``path`` and ``when`` is answered, so that request already sees it.
    """

    change: Callable[[FakeScim], object]
    at: int = 1
    path: str | None = None
    when: Callable[[RecordedRequest], bool] | None = None
    matched: int = 0
    request_number: int | None = None
    """The 1-based number (in `FakeScim.requests`) of the request it preceded."""

    def due(self, request: RecordedRequest) -> bool:
        """Count a request that matches, and tell whether the change is due now."""
        if self.request_number is not None:
            return False
        if self.path is not None and request.path != self.path:
            return False
        if self.when is not None and not self.when(request):
            return False
        self.matched += 1
        return self.matched == self.at


def default_service_provider_config() -> dict[str, Any]:
    """Return the ServiceProviderConfig the fake serves unless told otherwise."""
    return {
        "schemas": [SPC_SCHEMA],
        "patch": {"supported": False},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": 1000},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Bearer token",
            }
        ],
    }


class FakeScim(BackgroundServer):
    """An in-process SCIM server on ``127.0.0.1:0``; use it as a context manager."""

    def __init__(
        self,
        users: Iterable[Resource] = (),
        groups: Iterable[Resource] = (),
        **knobs: Any,
    ) -> None:
        self.users: list[Resource] = [copy.deepcopy(u) for u in users]
        self.groups: list[Resource] = [copy.deepcopy(g) for g in groups]

        # -- Index paging (RFC 7644 §3.4.2.4) --
        self.page_cap: int | None = None
        """At most this many resources per page, whatever ``count`` asks."""
        self.default_count: int | None = None
        """Page size when ``count`` is missing (``None``: everything)."""
        self.items_per_page: Literal["page", "requested", "missing"] = "page"
        self.total_results: Literal["exact", "page", "requested", "missing"] = "exact"
        self.total_results_delta = 0
        """Added to an ``exact`` totalResults (never below 0): negative too small,
        positive too large."""
        self.numbers_as_strings = False
        """Send totalResults, itemsPerPage and startIndex as JSON strings."""
        self.ignore_start_index = False
        self.start_index_echo: Literal["echo", "zero", "missing"] = "echo"
        self.empty_resources: Literal["array", "omit", "null"] = "array"
        """How ``Resources`` looks on an empty page."""
        self.key_case: Literal["canonical", "lower", "upper"] = "canonical"
        """Letter case of the ListResponse keys."""
        self.require_paging_params = False
        """Answer ``totalResults: 0`` unless both startIndex and count are sent."""
        self.beyond_end_status: int | None = None
        """Status for a page that starts after the last resource (e.g. 404)."""

        # -- Cursor paging (RFC 9865) --
        self.cursor_only = False
        """400 on ``startIndex``; page by cursor only."""
        self.next_cursor_unasked = False
        """Add ``nextCursor`` to index-paged answers too."""

        # -- Discovery --
        self.service_provider_config: dict[str, Any] | None = (
            default_service_provider_config()
        )
        """Served at /ServiceProviderConfig; ``None`` gives 404."""
        self.spc_content_type: str | None = None
        """Content type of the ServiceProviderConfig (default: ``content_type``)."""

        # -- Members --
        self.list_members: MembersView = "full"
        """What ``GET /Groups`` shows of members."""
        self.get_members: MembersView = "full"
        """What ``GET /Groups/{id}`` shows of members."""
        self.user_groups = False
        """Fill each user's ``groups`` attribute from the true memberships."""
        self.user_groups_indirect = False
        """Also list groups reached through nesting, as ``type: indirect``."""
        self.user_groups_key = "groups"
        """The name users carry their groups under (RFC 7643 §2.1: any case)."""
        self.filter_users_by_group = True
        """Answer ``groups.value eq`` on /Users (else 400 invalidFilter)."""
        self.filter_groups_by_member = True
        """Answer ``members.value eq`` on /Groups (else 400 invalidFilter)."""

        # -- Attributes (RFC 7644 §3.4.2.5) --
        self.narrowed_drops: frozenset[str] = frozenset()
        """Attribute names (any case) left out of listed resources whenever
        ``attributes`` is sent, even when asked for: a server that narrows wrongly."""

        # -- Transport --
        self.content_type = "application/scim+json"
        self.bearer_token: str | None = None
        self.basic: tuple[str, str] | None = None
        self.faults: list[Fault] = []
        self.on_request: Callable[[FakeScim, RecordedRequest], None] | None = None
        """Called before each request is answered, e.g. to change the directory."""
        self.requests: list[RecordedRequest] = []
        self.applied: list[tuple[RecordedRequest, Fault]] = []
        """Every fault applied, with the request it was applied to."""
        self.mutations: list[Mutation] = []
        self.versions: list[tuple[list[Resource], list[Resource]]] = []
        """(users, groups) before the first mutation and after each one."""
        self.host = HOST
        """The loopback address to bind, e.g. ``127.0.0.2``."""

        for name, value in knobs.items():
            if not hasattr(self, name):
                msg = f"FakeScim has no knob {name!r}"
                raise TypeError(msg)
            setattr(self, name, value)

        self._cursors: dict[str, int] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._edit: Fault | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- Lifecycle ---------------------------------------------------------

    def start(self) -> FakeScim:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        fake = self

        class Handler(_Handler):
            owner = fake

        server = ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        self._port = int(server.server_address[1])
        return self._serve(server, 0.05)

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._closing.set()
        super().stop()

    @property
    def port(self) -> int:
        """The bound port (also once stopped, for messages that name it)."""
        if self._port is None:
            msg = "the fake was never started"
            raise RuntimeError(msg)
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/scim/v2``."""
        return f"http://{self.host}:{self.port}{BASE_PATH}"

    # -- Programming -------------------------------------------------------

    def fail(self, *faults: Fault) -> None:
        """Schedule faults; the first one that applies to a request wins."""
        with self._lock:
            self.faults.extend(faults)

    def mutate(self, *mutations: Mutation) -> None:
        """Schedule changes of the directory (see `Mutation`)."""
        with self._lock:
            self.mutations.extend(mutations)

    @property
    def history(self) -> list[tuple[list[Resource], list[Resource]]]:
        """Every version of the directory so far, oldest first."""
        with self._lock:
            return self.versions or [self._version()]

    def _version(self) -> tuple[list[Resource], list[Resource]]:
        return copy.deepcopy(self.users), copy.deepcopy(self.groups)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Return the recorded requests to one path below the base path."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def list_requests(self) -> list[RecordedRequest]:
        """Return the recorded requests to ``/Users`` and ``/Groups``."""
        with self._lock:
            return [r for r in self.requests if r.path in ("/Users", "/Groups")]

    # -- Answers -----------------------------------------------------------

    def _answer(self, request: RecordedRequest) -> _Answer:
        with self._lock:
            self.requests.append(request)
            if self.on_request is not None:
                self.on_request(self, request)
            for mutation in self.mutations:
                if mutation.due(request):
                    if not self.versions:
                        self.versions.append(self._version())
                    mutation.change(self)
                    mutation.request_number = len(self.requests)
                    self.versions.append(self._version())
            fault = next((f for f in self.faults if f.applies(request)), None)
            if fault is not None:
                self.applied.append((request, fault))
            if fault is not None and fault.action == "redirect":
                return self._redirect(request, fault)
            if fault is not None and fault.action in _PAGE_EDITS:
                self._edit = fault
                try:
                    return self._route(request)
                finally:
                    self._edit = None
            if fault is not None and fault.body is REAL and fault.action != "stall":
                real = self._route(request)
                return dataclasses.replace(
                    real, action=fault.action, seconds=fault.seconds
                )
            if fault is not None and fault.action != "stall":
                return _Answer.of_fault(fault)
            answer = self._route(request)
        if fault is not None:
            self._closing.wait(fault.seconds)
        return answer

    def _redirect(self, request: RecordedRequest, fault: Fault) -> _Answer:
        target = (fault.location or self.base_url).rstrip("/") + request.raw_path
        if request.raw_query:
            target += "?" + request.raw_query
        headers = {**fault.headers, "Location": target}
        return _Answer(fault.status, fault.payload(), fault.content_type, headers)

    def _route(self, request: RecordedRequest) -> _Answer:
        if request.method != "GET":
            return self._error(405, "only GET is served")
        auth = self._check_auth(request.headers.get("authorization"))
        if auth is not None:
            return auth
        path = request.path.rstrip("/")
        if path == "/ServiceProviderConfig":
            if self.service_provider_config is None:
                return self._error(404, "no ServiceProviderConfig here")
            return self._json(200, self.service_provider_config, self.spc_content_type)
        if path in ("/Users", "/Groups"):
            return self._list(path[1:], request.query)
        endpoint, _, raw_id = request.raw_path.rstrip("/")[1:].partition("/")
        if endpoint in ("Users", "Groups") and raw_id and "/" not in raw_id:
            return self._by_id(endpoint, unquote(raw_id))
        return self._error(404, f"no endpoint {request.path}")

    def _check_auth(self, authorization: str | None) -> _Answer | None:
        if self.bearer_token is None and self.basic is None:
            return None
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and credentials == self.bearer_token:
            return None
        if scheme.lower() == "basic" and self.basic is not None:
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                decoded = base64.b64decode(credentials, validate=True).decode()
                if tuple(decoded.partition(":")[::2]) == self.basic:
                    return None
        return _Answer(
            401,
            b"Unauthorized",
            "text/plain",
            {"WWW-Authenticate": 'Bearer realm="fake-scim"'},
        )

    def _by_id(self, endpoint: str, resource_id: str) -> _Answer:
        pool = self.users if endpoint == "Users" else self.groups
        found = next(
            (r for r in _objects(pool) if str(r.get("id")) == resource_id), None
        )
        if found is None:
            return self._error(404, f"Resource {resource_id} not found")
        if endpoint == "Users":
            return self._json(200, self._shown_user(found))
        return self._json(200, self._shown_group(found, self.get_members))

    def _list(self, endpoint: str, query: Mapping[str, str]) -> _Answer:
        lowered = {key.lower(): value for key, value in query.items()}
        items = self._filtered(endpoint, lowered.get("filter"))
        if isinstance(items, _Answer):
            return items
        shown = [
            self._shown_user(r)
            if endpoint == "Users"
            else self._shown_group(r, self.list_members)
            for r in items
        ]
        shown = [_projected(r, lowered) for r in shown]
        if "attributes" in lowered and self.narrowed_drops:
            drops = {name.lower() for name in self.narrowed_drops}
            shown = [_without(r, drops) for r in shown]
        if "cursor" in lowered:
            return self._cursor_page(shown, lowered)
        if self.cursor_only:
            if "startindex" in lowered:
                return self._error(
                    400, "startIndex is not supported; page with cursor", "invalidValue"
                )
            return self._cursor_page(shown, {**lowered, "cursor": ""})
        return self._index_page(shown, lowered)

    def _filtered(
        self, endpoint: str, expression: str | None
    ) -> list[Resource] | _Answer:
        pool = self.users if endpoint == "Users" else self.groups
        if expression is None:
            return list(pool)
        match = _FILTER.match(expression)
        attribute = match.group("attribute").lower() if match else ""
        if endpoint == "Users" and attribute == "groups" and match:
            if not self.filter_users_by_group:
                return self._error(400, "Unsupported filter", "invalidFilter")
            value = json.loads(f'"{match.group("value")}"')
            members = self._true_members(value)
            return [u for u in _objects(pool) if str(u.get("id")) in members]
        if endpoint == "Groups" and attribute == "members" and match:
            if not self.filter_groups_by_member:
                return self._error(400, "Unsupported filter", "invalidFilter")
            value = json.loads(f'"{match.group("value")}"')
            return [
                g
                for g in _objects(pool)
                if value in self._true_members(str(g.get("id")))
            ]
        return self._error(400, f"Unsupported filter {expression}", "invalidFilter")

    def _index_page(self, shown: list[Resource], query: Mapping[str, str]) -> _Answer:
        has_both = "startindex" in query and "count" in query
        if self.require_paging_params and not has_both:
            return self._json(200, self._list_body([], 0, 0, 1, None, None))
        start = max(_int(query.get("startindex"), None) or 1, 1)
        if self.ignore_start_index:
            start = 1
        if self._edit is not None and self._edit.action == "shift":
            start = max(start + self._edit.shift, 1)
        requested = _int(query.get("count"), self.default_count)
        size = _size(requested, self.page_cap, len(shown))
        total = len(shown)
        if self.beyond_end_status is not None and start > max(total, 1):
            return self._error(self.beyond_end_status, f"startIndex {start} too large")
        page = shown[start - 1 : start - 1 + size]
        following = start - 1 + len(page)
        next_cursor = None
        if self.next_cursor_unasked and following < total:
            next_cursor = self._issue_cursor(following)
        body = self._list_body(page, total, requested, start, next_cursor, None)
        return self._json(200, body)

    def _cursor_page(self, shown: list[Resource], query: Mapping[str, str]) -> _Answer:
        cursor = query["cursor"]
        offset = 0 if cursor == "" else self._cursors.get(cursor)
        if offset is None:
            return self._error(400, f"Unknown cursor {cursor!r}", "invalidCursor")
        if self._edit is not None and self._edit.action == "shift":
            offset = max(offset + self._edit.shift, 0)
        requested = _int(query.get("count"), self.default_count)
        size = _size(requested, self.page_cap, len(shown))
        page = shown[offset : offset + size]
        following = offset + len(page)
        next_cursor = self._issue_cursor(following) if following < len(shown) else None
        body = self._list_body(page, len(shown), requested, None, next_cursor, cursor)
        return self._json(200, body)

    def _issue_cursor(self, offset: int) -> str:
        # Characters that must be URL-encoded: a client that does not encode them
        # sends an unknown cursor.
        token = f"c+{len(self._cursors)}/{offset}=="
        self._cursors[token] = offset
        return token

    def _list_body(
        self,
        page: list[Resource],
        total: int,
        requested: int | None,
        start: int | None,
        next_cursor: str | None,
        cursor: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [LIST_RESPONSE]}
        page = self._edited(page)
        totals = {
            "exact": max(total + self.total_results_delta, 0),
            "page": len(page),
            "requested": requested if requested is not None else len(page),
        }
        if self.total_results in totals:
            body["totalResults"] = self._number(totals[self.total_results])
        per_page = {"page": len(page), "requested": requested or len(page)}
        if self.items_per_page in per_page:
            body["itemsPerPage"] = self._number(per_page[self.items_per_page])
        if start is not None and self.start_index_echo != "missing":
            echoed = 0 if self.start_index_echo == "zero" else start
            body["startIndex"] = self._number(echoed)
        if page or self.empty_resources == "array":
            body["Resources"] = page
        elif self.empty_resources == "null":
            body["Resources"] = None
        if next_cursor is not None:
            body["nextCursor"] = next_cursor
        if cursor:
            body["previousCursor"] = cursor
        return {self._key(key): value for key, value in body.items()}

    def _edited(self, page: list[Resource]) -> list[Resource]:
        edit = self._edit
        if edit is None or not page or edit.action not in ("skip", "repeat"):
            return page
        page = list(page)
        position = min(max(edit.position, 0), len(page) - 1)
        if edit.action == "skip":
            del page[position]
        else:
            page.insert(position + 1, copy.deepcopy(page[position]))
        return page

    def _key(self, key: str) -> str:
        if self.key_case == "lower":
            return key.lower()
        if self.key_case == "upper":
            return key.upper()
        return key

    def _number(self, value: int) -> int | str:
        return str(value) if self.numbers_as_strings else value

    def _shown_user(self, resource: Resource) -> Resource:
        shown = copy.deepcopy(resource)
        if not self.user_groups or not isinstance(resource, dict):
            return shown
        user_id = str(resource.get("id"))
        direct = [
            g
            for g in _objects(self.groups)
            if user_id in self._true_members(str(g.get("id")))
        ]
        entries = [_group_entry(g, "direct") for g in direct]
        if self.user_groups_indirect:
            reached = self._ancestors([str(g["id"]) for g in direct])
            entries += [
                _group_entry(g, "indirect")
                for g in _objects(self.groups)
                if g["id"] in reached and g not in direct
            ]
        shown[self.user_groups_key] = entries
        return shown

    def _shown_group(self, resource: Resource, view: MembersView) -> Resource:
        shown = copy.deepcopy(resource)
        if not isinstance(shown, dict):
            return shown
        members = shown.pop("members", None)
        if view == "full" and members is not None:
            shown["members"] = members
        elif view == "empty":
            shown["members"] = []
        elif view == "users_only" and members:
            users = [m for m in members if str(m.get("type", "")).lower() != "group"]
            if users:
                shown["members"] = users
        return shown

    def _true_members(self, group_id: str) -> set[str]:
        found = next(
            (g for g in _objects(self.groups) if str(g.get("id")) == group_id), None
        )
        values = set()
        for entry in (found or {}).get("members") or []:
            value = entry.get("value")
            if value is None and entry.get("$ref"):
                value = str(entry["$ref"]).rstrip("/").rpartition("/")[2]
            if value is not None:
                values.add(str(value))
        return values

    def _ancestors(self, group_ids: list[str]) -> set[str]:
        reached: set[str] = set()
        stack = list(group_ids)
        while stack:
            current = stack.pop()
            for candidate in _objects(self.groups):
                parent = str(candidate["id"])
                if current in self._true_members(parent) and parent not in reached:
                    reached.add(parent)
                    stack.append(parent)
        return reached

    def _json(
        self, status: int, body: object, content_type: str | None = None
    ) -> _Answer:
        return _Answer(
            status, json.dumps(body).encode(), content_type or self.content_type, {}
        )

    def _error(self, status: int, detail: str, scim_type: str | None = None) -> _Answer:
        return _Answer.of_fault(scim_error(status, detail, scim_type))


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str | None
    headers: Mapping[str, str]
    action: FaultAction = "respond"
    seconds: float = 0.0

    @classmethod
    def of_fault(cls, fault: Fault) -> _Answer:
        return cls(
            fault.status,
            fault.payload(),
            fault.content_type,
            dict(fault.headers),
            fault.action,
            fault.seconds,
        )


class _Handler(BaseHTTPRequestHandler):
    owner: FakeScim
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith(BASE_PATH):
            self._send(_Answer(404, b"Not Found", "text/plain", {}))
            return
        pairs = parse_qs(parts.query, keep_blank_values=True)
        request = RecordedRequest(
            method=self.command,
            path=unquote(parts.path[len(BASE_PATH) :]) or "/",
            query={key: values[-1] for key, values in pairs.items()},
            headers={key.lower(): value for key, value in self.headers.items()},
            raw_path=parts.path[len(BASE_PATH) :] or "/",
            raw_query=parts.query,
        )
        answer = self.owner._answer(request)
        with contextlib.suppress(OSError):
            self._send(answer)

    def _send(self, answer: _Answer) -> None:
        if answer.action == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(answer.status)
        if answer.content_type is not None:
            self.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        body = answer.body
        if answer.action == "cut":
            # No Content-Length: the body ends where the connection does.
            self.end_headers()
            self.wfile.write(answer.body[: len(answer.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if answer.action == "trickle":
            self.end_headers()
            self._trickle(answer)
            return
        if answer.action in ("truncate", "stall_body"):
            body = body if len(body) > 1 else b'{"Resources": [{"id": "x"}]}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if answer.action == "stall_body":
                self.owner._closing.wait(answer.seconds)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, answer: _Answer) -> None:
        # One byte at a time, never finishing: a per-read timeout never fires.
        closing = self.owner._closing
        pending = answer.body
        self.close_connection = True
        while not closing.is_set():
            byte, pending = (pending[:1], pending[1:]) if pending else (b" ", b"")
            try:
                self.wfile.write(byte)
                self.wfile.flush()
            except OSError:
                return
            closing.wait(answer.seconds)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _projected(resource: Resource, query: Mapping[str, str]) -> Resource:
    # RFC 7644 §3.9: "id" is always returned; names are case-insensitive.
    if not isinstance(resource, dict):
        return resource  # a deliberately broken entry, served as is
    attributes = _names(query.get("attributes"))
    excluded = _names(query.get("excludedattributes")) - {"id"}
    if attributes:
        return _kept(resource, attributes | {"id", "schemas"})
    return {k: v for k, v in resource.items() if k.lower() not in excluded}


def _kept(resource: Resource, names: set[str]) -> Resource:
    # RFC 7644 §3.10: "name.givenName" names a sub-attribute, and
    # "<schema URN>:<attribute>" an attribute of that schema, e.g. of an extension.
    whole: set[str] = set()
    parts: dict[str, set[str]] = {}
    extensions = [k.lower() for k in resource if k.lower().startswith("urn:")]
    for name in names:
        schema = next((e for e in extensions if name.startswith(e + ":")), None)
        if schema is not None:
            parts.setdefault(schema, set()).add(name[len(schema) + 1 :])
            continue
        if name in extensions:
            whole.add(name)
            continue
        if name.startswith("urn:"):
            name = name.rpartition(":")[2]  # a core attribute, fully qualified
        top, _, sub = name.partition(".")
        if sub:
            parts.setdefault(top, set()).add(sub)
        else:
            whole.add(top)
    kept: Resource = {}
    for key, value in resource.items():
        lowered = key.lower()
        if lowered in whole:
            kept[key] = value
        elif lowered in parts and isinstance(value, dict):
            kept[key] = _kept(value, parts[lowered])
        elif lowered in parts and isinstance(value, list):
            kept[key] = [
                _kept(v, parts[lowered]) if isinstance(v, dict) else v for v in value
            ]
    return kept


def _without(resource: Resource, names: set[str]) -> Resource:
    if not isinstance(resource, dict):
        return resource
    return {k: v for k, v in resource.items() if k.lower() not in names}


def _objects(pool: Iterable[object]) -> list[Resource]:
    return [resource for resource in pool if isinstance(resource, dict)]


def _names(text: str | None) -> set[str]:
    return {name.strip().lower() for name in (text or "").split(",") if name.strip()}


def _group_entry(resource: Resource, kind: str) -> dict[str, Any]:
    return {
        "value": resource["id"],
        "display": resource.get("displayName"),
        "type": kind,
        "$ref": f"../Groups/{resource['id']}",
    }


def _int(text: str | None, default: int | None) -> int | None:
    if text is None or not text.strip().lstrip("-").isdigit():
        return default
    return int(text)


def _size(requested: int | None, cap: int | None, total: int) -> int:
    size = total if requested is None else max(requested, 0)
    return size if cap is None else min(size, cap)


# -- Driving the connector against the fake ----------------------------------

Triple = tuple[str, str, str | None]

# requestAttributes=false: the paging and error tests count and schedule the
# listing's own requests; tests of the attributes probe pass requestAttributes=true.
TEST_OVERRIDES = (
    "retryBackoffMs=0",
    "retryAfterMax=5",
    "requestTimeout=2",
    "requestAttributes=false",
)


@dataclass(frozen=True)
class Reading:
    """What one ``ScimSource().read`` yielded, in comparable form."""

    users: list[str]
    """User entity ids, in the order yielded."""
    groups: list[str]
    """Group entity ids, in the order yielded."""
    relationships: list[Triple]
    """(from id, to id, membershipType or None), sorted; duplicates kept."""
    attributes: dict[str, dict[str, object]]
    """Entity id → attribute id → plain value."""


def read_options(
    base_url: str, *overrides: str, password: str = "t", username: str | None = None
) -> dict[str, object]:
    """Resolve the source's options for a fake, with fast test settings."""
    environ = {"ELIMITY_SCIM_BASE_URL": base_url, "ELIMITY_SCIM_PASSWORD": password}
    if username is not None:
        environ["ELIMITY_SCIM_USERNAME"] = username
    return resolve(
        ScimSource().manifest(),
        config_file=None,
        environ=environ,
        overrides=[*TEST_OVERRIDES, *overrides],
    )


def read_fake(
    fake: FakeScim, *overrides: str, password: str = "t", username: str | None = None
) -> Reading:
    """Read the fake completely through ``ScimSource().read``."""
    options = read_options(
        fake.base_url, *overrides, password=password, username=username
    )
    users: list[str] = []
    groups: list[str] = []
    relationships: list[Triple] = []
    attributes: dict[str, dict[str, object]] = {}
    for item in ScimSource().read(options):
        if isinstance(item, Entity):
            (users if item.type == "user" else groups).append(item.id)
            attributes[item.id] = {
                a.attribute_type_id: getattr(a.value, "value", a.value)
                for a in item.attribute_assignments
            }
            continue
        kinds = [
            getattr(a.value, "value", None)
            for a in item.attribute_assignments
            if a.attribute_type_id == "membershipType"
        ]
        relationships.append(
            (item.from_entity_id, item.to_entity_id, kinds[0] if kinds else None)
        )
    return Reading(users, groups, sorted(relationships, key=repr), attributes)
