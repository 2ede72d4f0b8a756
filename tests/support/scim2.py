"""A real scim2-server on 127.0.0.1, in a background thread, for tests and demos.

It serves scim2-server's own WSGI application over an in-memory storage, adds
HTTP Basic auth and a fault hook, and seeds directories through the server's own
``/Bulk`` endpoint.

Run ``python -m tests.support.scim2 --port P --bearer-token T`` from the repository
root to serve a seeded example directory until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import json
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import requests
from scim2_models import (
    AuthenticationScheme,
    External,
    Reference,
    ScimProvider,
    ServiceProviderConfig,
    UnauthorizedException,
)
from scim2_server.applications.wsgi import WSGIApplication
from scim2_server.memory import InMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)

from tests.support.directory import (
    ENTERPRISE_SCHEMA,
    Directory,
    Resource,
    SeededDirectory,
    example_directory,
)
from tests.support.serving import BackgroundServer

HOST = "127.0.0.1"
BULK_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
PATCH_OP_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# Members beyond this many are added by PATCH, so that one operation stays far
# below the 1 MiB bulk payload limit whatever the size of the group.
MEMBERS_PER_OPERATION = 4000
TIMEOUT_SECONDS = 60
# How often the serving thread checks for `stop`; the default 0.5 s slows tests.
POLL_SECONDS = 0.02

BASIC_SCHEME = AuthenticationScheme(
    type=AuthenticationScheme.Type.httpbasic,
    name="http_basic",
    description="HTTP Basic",
    spec_uri=Reference[External]("https://datatracker.ietf.org/doc/html/rfc7617"),
)


class SeedError(RuntimeError):
    """The server refused part of a directory while seeding."""


class _Application(WSGIApplication):
    """scim2-server's WSGI application, accepting Bearer tokens and HTTP Basic."""

    def __init__(
        self,
        storage: InMemoryStorage,
        provider: ScimProvider,
        service: ScimService,
        bearer_tokens: Sequence[str],
        basic: tuple[str, str] | None,
    ) -> None:
        super().__init__(storage, provider, service)
        self.bearer_tokens = set(bearer_tokens)
        self.basic = basic

    def check_auth(self, request: ScimRequest) -> None:
        if not self.bearer_tokens and self.basic is None:
            return
        scheme, _, credentials = (request.header("Authorization") or "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and credentials in self.bearer_tokens:
            return
        if scheme == "basic" and self.basic and _basic(credentials) == self.basic:
            return
        raise UnauthorizedException


def _basic(credentials: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, separator, password = decoded.partition(":")
    return (username, password) if separator else None


class _LoopbackServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    owner: Scim2Server


class _RequestHandler(WSGIRequestHandler):
    server: _LoopbackServer

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if not self.server.owner._admit(self.command, self.path):
            # Hang up before any byte of a response, as a crashing server would.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class _Break:
    endpoint: str
    n: int
    seen: int = 0


class Scim2Server(BackgroundServer):
    """scim2-server on ``127.0.0.1`` at a free port, serving from memory.

    Without ``bearer_tokens`` and ``basic`` it accepts every request. With either,
    a request needs one of the tokens or the Basic credentials (except
    ``/ServiceProviderConfig``, which RFC 7644 §4 leaves open). ``pagination`` is
    the ``pagination`` block of the ServiceProviderConfig (RFC 9865), e.g.
    ``{"cursor": True, "index": True, "defaultPaginationMethod": "index",
    "defaultPageSize": 10, "maxPageSize": 25, "cursorTimeout": 600}``. ``bulk``
    overrides keys of the default bulk block (``{"supported": True,
    "maxOperations": 1000, "maxPayloadSize": 1048576}``).
    """

    def __init__(
        self,
        *,
        bearer_tokens: Sequence[str] = (),
        basic: tuple[str, str] | None = None,
        pagination: Mapping[str, Any] | None = None,
        bulk: Mapping[str, Any] | None = None,
        port: int = 0,
    ) -> None:
        self.bearer_tokens = tuple(bearer_tokens)
        self.basic = basic
        self.pagination = dict(pagination) if pagination is not None else None
        self.bulk = dict(bulk) if bulk is not None else None
        self.seeded: SeededDirectory | None = None
        """What the last `seed` stored."""
        self.requests: list[tuple[str, str]] = []
        """(method, path with query) of every request, in arrival order."""
        self._port = port
        self._lock = threading.Lock()
        self._break: _Break | None = None
        self._server: _LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # -- Lifecycle -------------------------------------------------------

    def start(self) -> Scim2Server:
        """Bind the port and serve in a daemon thread; return self."""
        if self._server is not None:
            msg = "the server is already running"
            raise RuntimeError(msg)
        server = _LoopbackServer((HOST, self._port), _RequestHandler)
        server.owner = self
        server.set_app(self._application())
        return self._serve(server, POLL_SECONDS, f"scim2-server:{server.server_port}")

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            msg = "the server is not running"
            raise RuntimeError(msg)
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """Root of the SCIM endpoints, e.g. ``http://127.0.0.1:PORT/v2``."""
        return f"http://{HOST}:{self.port}/v2"

    def _application(self) -> _Application:
        config = load_default_service_provider_config()
        blocks = config.model_dump()
        if self.pagination is not None:
            blocks["pagination"] = self.pagination
        if self.bulk is not None:
            blocks["bulk"] = {**blocks["bulk"], **self.bulk}
        config = ServiceProviderConfig.model_validate(blocks)
        schemes = [
            *([BEARER_TOKEN_SCHEME] if self.bearer_tokens else []),
            *([BASIC_SCHEME] if self.basic else []),
        ]
        if schemes:
            config.authentication_schemes = schemes
        provider = ScimProvider.from_discovery(
            load_default_schemas().values(),
            load_default_resource_types().values(),
            config=config,
        )
        # The cursors of RFC 9865 are sealed with a secret of this process.
        service = ScimService(provider, secret=secrets.token_urlsafe(32))
        return _Application(
            InMemoryStorage(), provider, service, self.bearer_tokens, self.basic
        )

    # -- Requests and faults ---------------------------------------------

    def break_after(self, endpoint: str, n: int) -> None:
        """Hang up without answering from the n-th next GET on ``…/{endpoint}`` on.

        GETs are counted from this call: ``n=1`` breaks the very next list request
        of ``endpoint`` (e.g. ``"Users"``), ``n=3`` lets two pages through. Every
        later matching GET fails as well, until `heal`.
        """
        if n < 1:
            msg = f"n must be at least 1, not {n}"
            raise ValueError(msg)
        with self._lock:
            self._break = _Break(endpoint.strip("/"), n)

    def heal(self) -> None:
        """Answer every request again."""
        with self._lock:
            self._break = None

    def _admit(self, method: str, target: str) -> bool:
        with self._lock:
            self.requests.append((method, target))
            rule = self._break
            if rule is None or method != "GET":
                return True
            if not urlsplit(target).path.endswith(f"/{rule.endpoint}"):
                return True
            rule.seen += 1
            return rule.seen < rule.n

    # -- Clients ---------------------------------------------------------

    @property
    def auth_headers(self) -> dict[str, str]:
        """An Authorization header the server accepts (empty when it needs none)."""
        if self.bearer_tokens:
            return {"Authorization": f"Bearer {self.bearer_tokens[0]}"}
        if self.basic is not None:
            pair = ":".join(self.basic).encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}

    def session(self) -> requests.Session:
        """A requests session that authenticates to this server."""
        session = requests.Session()
        session.headers.update(self.auth_headers)
        session.headers["Accept"] = "application/scim+json"
        return session

    def list_resources(self, endpoint: str) -> dict[str, Resource]:
        """Every resource of ``endpoint`` ("Users", "Groups"), by id, over HTTP."""
        with self.session() as session:
            return _list_all(session, self.base_url, endpoint, self.pagination)

    # -- Seeding ---------------------------------------------------------

    def seed(self, directory: Directory, *, read_back: bool = True) -> SeededDirectory:
        """Store a directory through ``POST /Bulk`` and return it with server ids.

        With ``read_back`` the resources are listed back from the server (with
        ``meta``, as a client sees them); without, they are the posted resources
        plus their ``id``, which is faster for big directories. The requests of
        seeding are left out of `requests`.
        """
        with self.session() as session:
            config = _get(session, f"{self.base_url}/ServiceProviderConfig")
            bulk = config.get("bulk") or {}
            if not bulk.get("supported"):
                msg = "the server does not support bulk requests"
                raise SeedError(msg)
            seeder = _Seeder(
                session,
                self.base_url,
                directory,
                max_operations=bulk.get("maxOperations") or 1000,
                max_payload_size=bulk.get("maxPayloadSize") or 1 << 20,
            )
            ids = seeder.run()
            if read_back:
                listed = {
                    **_list_all(session, self.base_url, "Users", self.pagination),
                    **_list_all(session, self.base_url, "Groups", self.pagination),
                }
            else:
                listed = {ids[key]: seeder.posted(key) for key in ids}
        missing = sorted(key for key in ids if ids[key] not in listed)
        if missing:
            msg = f"the server does not list {', '.join(missing[:5])}"
            raise SeedError(msg)
        seeded = SeededDirectory.of(
            directory,
            ids,
            users={ids[key]: listed[ids[key]] for key in directory.users},
            groups={ids[key]: listed[ids[key]] for key in directory.groups},
        )
        with self._lock:
            self.requests.clear()
        self.seeded = seeded
        return seeded


def _get(session: requests.Session, url: str, **params: Any) -> dict[str, Any]:
    response = session.get(url, params=params, timeout=TIMEOUT_SECONDS)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _list_all(
    session: requests.Session,
    base_url: str,
    endpoint: str,
    pagination: Mapping[str, Any] | None,
) -> dict[str, Resource]:
    url = f"{base_url}/{endpoint}"
    found: dict[str, Resource] = {}
    if pagination is None or pagination.get("index", False):
        start = 1
        while True:
            page = _get(session, url, startIndex=start, count=1000)
            resources = page.get("Resources") or []
            if not resources:
                return found
            found.update((resource["id"], resource) for resource in resources)
            start += len(resources)
    cursor = ""
    while True:
        page = _get(session, url, cursor=cursor, count=1000)
        resources = page.get("Resources") or []
        found.update((resource["id"], resource) for resource in resources)
        if not page.get("nextCursor"):
            return found
        cursor = page["nextCursor"]


class _Seeder:
    """Posts a directory in bulk batches, in an order that lets bulkIds resolve.

    scim2-server resolves ``bulkId:`` references only within one bulk request,
    and refuses circular ones (409). So resources are posted after the ones they
    reference: within a batch a reference is a ``bulkId:``, across batches the
    real id. References that close a cycle, and members beyond
    `MEMBERS_PER_OPERATION`, are added by PATCH once everything exists.
    """

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        directory: Directory,
        max_operations: int,
        max_payload_size: int,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.directory = directory
        self.max_operations = max_operations
        self.max_payload_size = max_payload_size
        self.ids: dict[str, str] = {}

    def run(self) -> dict[str, str]:
        order, cyclic = _posting_order(self.directory)
        patches: list[tuple[str, Resource]] = []
        creations: list[tuple[str, Resource]] = []
        for key in order:
            resource, later = self._split(key, cyclic)
            creations.append((key, resource))
            patches += [(key, operation) for operation in later]
        self._post_batches(
            creations, lambda key, resource, batch: self._creation(key, resource, batch)
        )
        self._post_batches(
            patches, lambda key, operation, _: self._patch(key, operation)
        )
        return self.ids

    def _split(
        self, key: str, cyclic: set[tuple[str, str]]
    ) -> tuple[Resource, list[Resource]]:
        """The resource to POST, and the PATCH operations to apply afterwards."""
        resource = copy.deepcopy(self.directory.resource(key))
        later: list[Resource] = []
        manager = resource.get(ENTERPRISE_SCHEMA, {}).get("manager")
        if manager is not None and (key, manager["value"]) in cyclic:
            del resource[ENTERPRISE_SCHEMA]["manager"]
            path = f"{ENTERPRISE_SCHEMA}:manager"
            later.append({"op": "replace", "path": path, "value": manager})
        members: list[Resource] = []
        deferred: list[Resource] = []
        for member in resource.pop("members", []):
            cycles = (key, member["value"]) in cyclic
            (deferred if cycles else members).append(member)
        if members[:MEMBERS_PER_OPERATION]:
            resource["members"] = members[:MEMBERS_PER_OPERATION]
        deferred = members[MEMBERS_PER_OPERATION:] + deferred
        for start in range(0, len(deferred), MEMBERS_PER_OPERATION):
            chunk = deferred[start : start + MEMBERS_PER_OPERATION]
            later.append({"op": "add", "path": "members", "value": chunk})
        return resource, later

    def posted(self, key: str) -> Resource:
        """A resource as posted, with server ids for its references and itself."""
        resource = self.directory.resource(key)
        return {"id": self.ids[key], **self._resolve(resource, set())}

    def _endpoint(self, key: str) -> str:
        return "Users" if key in self.directory.users else "Groups"

    def _creation(self, key: str, resource: Resource, batch: set[str]) -> Resource:
        data = self._resolve(resource, batch)
        path = f"/{self._endpoint(key)}"
        return {"method": "POST", "path": path, "bulkId": key, "data": data}

    def _patch(self, key: str, operation: Resource) -> Resource:
        data = {
            "schemas": [PATCH_OP_SCHEMA],
            "Operations": [self._resolve(operation, set())],
        }
        path = f"/{self._endpoint(key)}/{self.ids[key]}"
        return {"method": "PATCH", "path": path, "data": data}

    def _resolve(self, value: Any, batch: set[str]) -> Any:
        """Replace the keys in member and manager values by ids or bulkIds."""
        if isinstance(value, list):
            return [self._resolve(item, batch) for item in value]
        if not isinstance(value, dict):
            return value
        resolved = {key: self._resolve(item, batch) for key, item in value.items()}
        reference = value.get("value")
        if isinstance(reference, str) and reference in self.directory:
            if reference in self.ids:
                resolved["value"] = self.ids[reference]
            elif reference in batch:
                resolved["value"] = f"bulkId:{reference}"
            else:
                msg = f"{reference} is referenced before it is posted"
                raise AssertionError(msg)
        return resolved

    def _post_batches(
        self,
        items: list[tuple[str, Resource]],
        build: Callable[[str, Resource, set[str]], Resource],
    ) -> None:
        envelope = {"schemas": [BULK_REQUEST_SCHEMA], "Operations": []}
        # Budget for the envelope; each operation adds its size plus ", ".
        budget = self.max_payload_size - len(json.dumps(envelope).encode())
        batch: list[Resource] = []
        keys: set[str] = set()
        size = 0
        for key, item in items:
            operation = build(key, item, keys | {key})
            cost = len(json.dumps(operation).encode()) + 2
            if batch and (len(batch) >= self.max_operations or size + cost > budget):
                self._send(batch)
                batch, keys, size = [], set(), 0
                operation = build(key, item, {key})
                cost = len(json.dumps(operation).encode()) + 2
            if cost > budget:
                msg = f"{key} does not fit in one bulk request ({cost} bytes)"
                raise SeedError(msg)
            batch.append(operation)
            keys.add(key)
            size += cost
        if batch:
            self._send(batch)

    def _send(self, operations: list[Resource]) -> None:
        body = {"schemas": [BULK_REQUEST_SCHEMA], "Operations": operations}
        response = self.session.post(
            f"{self.base_url}/Bulk",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/scim+json"},
            timeout=TIMEOUT_SECONDS,
        )
        if response.status_code != 200:
            msg = f"POST /Bulk answered {response.status_code}: {response.text}"
            raise SeedError(msg)
        for result in response.json()["Operations"]:
            if not 200 <= int(result["status"]) < 300:
                detail = (result.get("response") or {}).get("detail")
                target = result.get("bulkId") or result.get("location")
                msg = f"{result['method']} {target} failed: {result['status']} {detail}"
                raise SeedError(msg)
            if result["method"] == "POST":
                self.ids[result["bulkId"]] = result["location"].rsplit("/", 1)[1]


def _posting_order(directory: Directory) -> tuple[list[str], set[tuple[str, str]]]:
    """Keys with every resource after the ones it references, and the cyclic rest.

    The second result holds the (referrer, referenced) pairs that would close a
    cycle; they cannot be posted in order and are patched in afterwards.
    """
    order: list[str] = []
    done: set[str] = set()
    cyclic: set[tuple[str, str]] = set()
    for root in [*directory.users, *directory.groups]:
        if root in done:
            continue
        on_path = {root}
        stack: list[tuple[str, Iterator[str]]] = [
            (root, iter(directory.references(root)))
        ]
        while stack:
            key, references = stack[-1]
            reference = next(references, None)
            if reference is None:
                stack.pop()
                on_path.discard(key)
                done.add(key)
                order.append(key)
            elif reference in on_path:
                cyclic.add((key, reference))
            elif reference not in done:
                on_path.add(reference)
                stack.append((reference, iter(directory.references(reference))))
    return order, cyclic


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a seeded example directory until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.scim2",
        description="Serve an invented SCIM directory with scim2-server on "
        f"{HOST}, for manual tests.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--bearer-token", action="append", default=[], metavar="TOKEN")
    parser.add_argument("--basic", metavar="USER:PASSWORD")
    parser.add_argument("--example-users", type=int, default=300, metavar="N")
    parser.add_argument("--example-groups", type=int, default=30, metavar="N")
    parser.add_argument("--dangling", type=int, default=0, metavar="N")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pagination",
        type=json.loads,
        metavar="JSON",
        help='a ServiceProviderConfig pagination block, e.g. \'{"cursor": true, '
        '"index": true, "maxPageSize": 25}\'',
    )
    args = parser.parse_args(argv)
    basic = None
    if args.basic is not None:
        username, separator, password = args.basic.partition(":")
        if not separator:
            parser.error("--basic takes USER:PASSWORD")
        basic = (username, password)

    server = Scim2Server(
        bearer_tokens=args.bearer_token,
        basic=basic,
        pagination=args.pagination,
        port=args.port,
    )
    directory = example_directory(
        args.example_users, args.example_groups, args.seed, args.dangling
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with server:
        seeded = server.seed(directory)
        print(server.base_url, flush=True)
        print(
            f"{len(seeded.users)} users, {len(seeded.groups)} groups, "
            f"{len(seeded.user_memberships)} user memberships, "
            f"{len(seeded.group_memberships)} nested groups; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
