"""A synthetic SCIM 2.0 server for benchmarks, serving a generated directory.

Run it as its own process (``python -m benchmarks.scim_server ...``) so that its
CPU time is never counted as the client's. It binds 127.0.0.1 only, prints one JSON
line with its port and the directory's sizes once it is ready, and serves until
SIGTERM or SIGINT (or, with ``--stop-on-eof``, until its standard input closes).

The directory is deterministic for a given seed: realistic users (core and
enterprise attributes, one or two emails, ``meta`` timestamps; ~960 bytes of JSON
each), groups whose member counts follow a long tail up to thousands, some of them
nested (members of ``"type": "Group"``), with the members inline in the group list.

Server behaviour that the benchmarks vary: a latency slept before answering (no
lock held), a page cap (at most N resources per page whatever ``count`` asks,
advertised as ``filter.maxResults``) and a limit of concurrent requests beyond which
it answers 429 with ``Retry-After: 1``. Pages are rendered once at start-up for the
page cap, other ``count``s lazily and cached, so the server is not the bottleneck.

Benchmark-only endpoints, outside the SCIM base path and not counted:
``GET /_bench/stats`` and ``POST /_bench/reset``. A request with the header
``X-Bench-Prefetch: 1`` skips the latency and the concurrency limit and is not
counted either; only the reference-cost script uses it, to fetch page bodies
before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import threading
import time
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
BASE_PATH = "/scim/v2"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
CONTENT_TYPE = "application/scim+json"
_CACHE_LIMIT = 4096

_GIVEN = (
    "Aaliyah", "Aiko", "Alejandro", "Amara", "Anouk", "Arjun", "Astrid", "Bram",
    "Camille", "Chen", "Dmitri", "Elif", "Emma", "Fatima", "Finn", "Gabriel", "Hana",
    "Hugo", "Ingrid", "Isabela", "Jonas", "Kai", "Kofi", "Lars", "Leila", "Liam",
    "Lucía", "Mateo", "Maya", "Mei", "Mohammed", "Nadia", "Noah", "Olga", "Omar",
    "Priya", "Rafael", "Ravi", "Rosa", "Sakura", "Samir", "Sofia", "Søren", "Tariq",
    "Thandiwe", "Yusuf", "Zoë", "Zofia", "Ángel", "Renée",
)  # fmt: skip
_FAMILY = (
    "Adeyemi", "Andersen", "Bakker", "Brown", "Castillo", "Chen", "Claes", "De Smet",
    "Dubois", "Fernández", "Fischer", "García", "Goossens", "Hansen", "Haddad",
    "Ivanova", "Jacobs", "Janssens", "Kaya", "Kim", "Kowalski", "Lambert", "Martin",
    "Mertens", "Müller", "Nakamura", "Nguyen", "Novak", "Núñez", "Okafor", "Olsen",
    "Patel", "Peeters", "Rossi", "Santos", "Schmidt", "Silva", "Singh", "Smith",
    "Tanaka", "Varga", "Wouters", "Yılmaz", "Zhang", "Łukasiewicz",
)  # fmt: skip
_DEPARTMENTS = (
    ("Engineering", "Product", ("Software Engineer", "Staff Engineer", "SRE")),
    ("Support", "Product", ("Support Agent", "Support Lead")),
    ("Sales", "Commercial", ("Account Executive", "Sales Engineer")),
    ("Marketing", "Commercial", ("Marketing Manager", "Designer")),
    ("Finance", "Corporate", ("Accountant", "Controller", "Financial Analyst")),
    ("Human Resources", "Corporate", ("HR Business Partner", "Recruiter")),
    ("Legal", "Corporate", ("Counsel", "Paralegal")),
)
_PLACES = (
    ("en-US", "en-US", "America/New_York", "US"),
    ("en-GB", "en-GB", "Europe/London", "GB"),
    ("nl-BE", "nl-BE", "Europe/Brussels", "BE"),
    ("fr-FR", "fr-FR", "Europe/Paris", "FR"),
    ("de-DE", "de-DE", "Europe/Berlin", "DE"),
    ("ja-JP", "ja-JP", "Asia/Tokyo", "JP"),
    ("pt-BR", "pt-BR", "America/Sao_Paulo", "BR"),
)
_GROUP_KINDS = ("team", "project", "role", "app access", "distribution list")
_EPOCH = 1420070400  # 2015-01-01T00:00:00Z
_SPAN = 9 * 365 * 86400


@dataclass
class Directory:
    """The generated resources, each rendered once as compact JSON bytes."""

    base_url: str
    user_ids: list[str] = field(default_factory=list)
    user_json: list[bytes] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)
    group_json: list[bytes] = field(default_factory=list)
    group_bare_json: list[bytes] = field(default_factory=list)
    user_index: dict[str, int] = field(default_factory=dict)
    group_index: dict[str, int] = field(default_factory=dict)
    memberships: int = 0
    nested: int = 0
    largest_group: int = 0


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _timestamp(rng: random.Random, seconds: int) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    if rng.random() < 0.2:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randrange(1000):03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def group_sizes(groups: int, users: int, memberships: int) -> list[int]:
    """Return member counts with a long tail, summing to ``memberships``."""
    if memberships > groups * users:
        msg = f"{memberships} memberships do not fit in {groups} groups of {users}"
        raise ValueError(msg)
    weights = [(rank + 1) ** -0.7 for rank in range(groups)]
    total = sum(weights)
    sizes = [min(users, int(memberships * w / total)) for w in weights]
    missing = memberships - sum(sizes)
    for index in range(groups):
        if missing <= 0:
            break
        extra = min(users - sizes[index], missing)
        sizes[index] += extra
        missing -= extra
    return sizes


def generate(
    users: int,
    groups: int,
    memberships: int,
    *,
    base_url: str,
    seed: int = 7,
    nested_share: float = 0.1,
) -> Directory:
    """Generate a deterministic directory and render every resource."""
    rng = random.Random(seed)
    directory = Directory(base_url=base_url)
    directory.user_ids = [_uuid(rng) for _ in range(users)]
    directory.group_ids = [_uuid(rng) for _ in range(groups)]
    directory.user_index = {uid: i for i, uid in enumerate(directory.user_ids)}
    directory.group_index = {gid: i for i, gid in enumerate(directory.group_ids)}
    names = [(rng.choice(_GIVEN), rng.choice(_FAMILY)) for _ in range(users)]
    member_entries: list[bytes] = []
    for index, uid in enumerate(directory.user_ids):
        given, family = names[index]
        manager = rng.randrange(index) if index else None
        user = _user(rng, index, uid, given, family, manager, directory, names)
        directory.user_json.append(_dumps(user))
        member_entries.append(
            _dumps(
                {
                    "value": uid,
                    "$ref": f"{base_url}/Users/{uid}",
                    "display": f"{given} {family}",
                    "type": "User",
                }
            )
        )
    del names

    sizes = group_sizes(groups, users, memberships)
    rng.shuffle(sizes)
    directory.memberships = sum(sizes)
    directory.largest_group = max(sizes, default=0)
    median = sorted(sizes)[groups // 2] if groups else 0
    children: list[list[int]] = [[] for _ in range(groups)]
    for child in range(1, groups):
        if sizes[child] <= median and rng.random() < nested_share:
            children[rng.randrange(child)].append(child)  # parent < child: acyclic
            directory.nested += 1
    group_names = [_group_name(rng, index) for index in range(groups)]
    for index, gid in enumerate(directory.group_ids):
        group = _group(rng, index, gid, group_names[index], base_url)
        bare = _dumps(group)
        directory.group_bare_json.append(bare)
        entries = [member_entries[u] for u in rng.sample(range(users), sizes[index])]
        for child in children[index]:
            cid = directory.group_ids[child]
            entries.append(
                _dumps(
                    {
                        "value": cid,
                        "$ref": f"{base_url}/Groups/{cid}",
                        "display": group_names[child],
                        "type": "Group",
                    }
                )
            )
        directory.group_json.append(
            bare[:-1] + b',"members":[' + b",".join(entries) + b"]}"
        )
    return directory


def _user(
    rng: random.Random,
    index: int,
    uid: str,
    given: str,
    family: str,
    manager: int | None,
    directory: Directory,
    names: list[tuple[str, str]],
) -> dict[str, object]:
    login = f"{_ascii(given)}.{_ascii(family)}{index}"
    department, division, titles = rng.choice(_DEPARTMENTS)
    language, locale, timezone, country = rng.choice(_PLACES)
    created = _EPOCH + rng.randrange(_SPAN)
    modified = created + rng.randrange(86400 * 400)
    work = {"value": f"{login}@example.com", "type": "work", "primary": True}
    home = {"value": f"{login}@home.example.org", "type": "home"}
    roll = rng.random()
    emails = [work] if roll < 0.7 else [work, home] if roll < 0.95 else [home, work]
    user: dict[str, object] = {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "id": uid,
        "externalId": f"00u{rng.getrandbits(64):016x}",
        "userName": f"{login}@example.com",
        "name": {
            "formatted": f"{given} {family}",
            "familyName": family,
            "givenName": given,
        },
        "displayName": f"{given} {family}",
        "title": rng.choice(titles),
        "userType": "Employee" if rng.random() < 0.85 else "Contractor",
        "preferredLanguage": language,
        "locale": locale,
        "timezone": timezone,
        "active": rng.random() < 0.93,
        "emails": emails,
    }
    extension: dict[str, object] = {
        "employeeNumber": str(100000 + index),
        "costCenter": f"CC-{rng.randrange(400):04d}",
        "organization": "Example Corp",
        "division": division,
        "department": department,
    }
    if manager is not None:
        mid = directory.user_ids[manager]
        mgiven, mfamily = names[manager]
        extension["manager"] = {
            "value": mid,
            "displayName": f"{mgiven} {mfamily}",
        }
    user[ENTERPRISE] = extension
    user["meta"] = {
        "resourceType": "User",
        "created": _timestamp(rng, created),
        "lastModified": _timestamp(rng, modified),
    }
    return user


def _group_name(rng: random.Random, index: int) -> str:
    department = rng.choice(_DEPARTMENTS)[0]
    return f"{department} {rng.choice(_GROUP_KINDS)} {index:05d}"


def _group(
    rng: random.Random, index: int, gid: str, name: str, base_url: str
) -> dict[str, object]:
    created = _EPOCH + rng.randrange(_SPAN)
    return {
        "schemas": [GROUP_SCHEMA],
        "id": gid,
        "externalId": f"00g{rng.getrandbits(64):016x}",
        "displayName": name,
        "meta": {
            "resourceType": "Group",
            "created": _timestamp(rng, created),
            "lastModified": _timestamp(rng, created + rng.randrange(86400 * 400)),
            "location": f"{base_url}/Groups/{gid}",
            "version": f'W/"{rng.getrandbits(40):010x}"',
        },
    }


class ScimState:
    """The directory, its rendered pages and the request counters."""

    def __init__(
        self,
        directory: Directory,
        *,
        page_cap: int,
        latency: float,
        limit: int,
    ) -> None:
        self.directory = directory
        self.page_cap = page_cap
        self.latency = latency
        self.limit = limit
        self.lock = threading.Lock()
        self.pages: dict[tuple[str, int, int], bytes] = {}
        self.in_flight = 0
        self.counters: Counter[str] = Counter()

    def prerender(self) -> int:
        """Render every page a client asking for ``count`` = the page cap gets."""
        for kind, total in (
            ("Users", len(self.directory.user_json)),
            ("Groups", len(self.directory.group_json)),
        ):
            for start in range(1, total + 2, self.page_cap):
                self.page(kind, start, self.page_cap)
        return len(self.pages)

    def page(self, kind: str, start: int, count: int) -> bytes:
        """Return one ListResponse page; ``kind`` is Users, Groups or GroupsBare."""
        key = (kind, start, count)
        body = self.pages.get(key)
        if body is not None:
            return body
        if kind == "Users":
            items = self.directory.user_json
        elif kind == "Groups":
            items = self.directory.group_json
        else:
            items = self.directory.group_bare_json
        chosen = items[start - 1 : start - 1 + count]
        head = (
            f'{{"schemas":["{LIST_RESPONSE}"],"totalResults":{len(items)},'
            f'"startIndex":{start},"itemsPerPage":{len(chosen)},"Resources":['
        )
        body = head.encode() + b",".join(chosen) + b"]}"
        if len(self.pages) < _CACHE_LIMIT or count == self.page_cap:
            self.pages[key] = body
        return body

    def admit(self) -> bool:
        """Count a request; refuse it when the concurrency limit is reached."""
        with self.lock:
            self.counters["requests"] += 1
            if self.in_flight >= self.limit:
                self.counters["throttled"] += 1
                return False
            self.in_flight += 1
            self.counters["max_in_flight"] = max(
                self.counters["max_in_flight"], self.in_flight
            )
            return True

    def release(self) -> None:
        """Note that an admitted request is about to be answered."""
        with self.lock:
            self.in_flight -= 1

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a counter."""
        with self.lock:
            self.counters[name] += amount

    def stats(self) -> dict[str, int]:
        """Return a copy of the counters."""
        with self.lock:
            return dict(self.counters)

    def reset(self) -> None:
        """Zero the counters."""
        with self.lock:
            self.counters.clear()

    def service_provider_config(self) -> bytes:
        """Return the ServiceProviderConfig, advertising the page cap."""
        return _dumps(
            {
                "schemas": [SPC_SCHEMA],
                "patch": {"supported": False},
                "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
                "filter": {"supported": False, "maxResults": self.page_cap},
                "changePassword": {"supported": False},
                "sort": {"supported": False},
                "etag": {"supported": False},
                "authenticationSchemes": [
                    {
                        "type": "oauthbearertoken",
                        "name": "OAuth Bearer Token",
                        "description": "Authentication with a bearer token",
                    }
                ],
                "meta": {
                    "resourceType": "ServiceProviderConfig",
                    "location": f"{self.directory.base_url}/ServiceProviderConfig",
                },
            }
        )


def error_body(status: int, detail: str, scim_type: str | None = None) -> bytes:
    """Return a SCIM error body."""
    body: dict[str, object] = {
        "schemas": [ERROR_SCHEMA],
        "status": str(status),
        "detail": detail,
    }
    if scim_type:
        body["scimType"] = scim_type
    return _dumps(body)


class ScimHandler(BaseHTTPRequestHandler):
    """Answers SCIM GETs from the pre-rendered pages."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "bench-scim/1"
    state: ScimState  # set on a subclass in main
    counted = False  # whether this request counts (not a prefetch)

    def _note(self, name: str) -> None:
        if self.counted:
            self.state.count(name)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        if parts.path == "/_bench/stats":
            self._send(200, _dumps(self.state.stats()), "application/json")
            return
        prefetch = self.headers.get("X-Bench-Prefetch") == "1"
        if not prefetch and not self.state.admit():
            self._send(
                429,
                error_body(429, "Too many concurrent requests"),
                CONTENT_TYPE,
                {"Retry-After": "1"},
            )
            return
        try:
            if self.state.latency > 0 and not prefetch:
                time.sleep(self.state.latency)
            self.counted = not prefetch
            status, body = self._route(parts.path, parts.query)
        finally:
            if not prefetch:
                self.state.release()
        self._send(status, body, CONTENT_TYPE)
        if not prefetch:
            self.state.count("bytes_sent", len(body))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if urlsplit(self.path).path == "/_bench/reset":
            self.state.reset()
            self._send(204, b"", "application/json")
        else:
            self._send(405, error_body(405, "read-only server"), CONTENT_TYPE)

    def _route(self, path: str, query: str) -> tuple[int, bytes]:
        if not self.headers.get("Authorization"):
            return 401, error_body(401, "Authorization required")
        if not path.startswith(BASE_PATH + "/"):
            return 404, error_body(404, "Not found")
        rest = path[len(BASE_PATH) + 1 :].rstrip("/")
        state = self.state
        directory = state.directory
        if rest == "ServiceProviderConfig":
            return 200, state.service_provider_config()
        if rest in ("Users", "Groups"):
            params = {k: v[-1] for k, v in parse_qs(query).items()}
            if "filter" in params:
                return 400, error_body(400, "filter is not supported", "invalidFilter")
            try:
                start = max(1, int(params.get("startIndex", "1")))
                count = int(params.get("count", str(state.page_cap)))
            except ValueError:
                return 400, error_body(400, "startIndex and count must be integers")
            count = max(0, min(count, state.page_cap))
            kind = rest
            excluded = params.get("excludedAttributes", "").lower()
            if rest == "Groups" and "members" in excluded.split(","):
                kind = "GroupsBare"
            self._note(f"pages_{kind}")
            if "attributes" in params:
                self._note(f"pages_{kind}_with_attributes")
            listed = directory.user_json if kind == "Users" else directory.group_json
            if start > len(listed):
                self._note(f"pages_{kind}_past_end")
            return 200, state.page(kind, start, count)
        kind, _, rid = rest.partition("/")
        rid = unquote(rid)
        self._note(f"by_id_{kind}")
        if kind == "Users" and rid in directory.user_index:
            return 200, directory.user_json[directory.user_index[rid]]
        if kind == "Groups" and rid in directory.group_index:
            return 200, directory.group_json[directory.group_index[rid]]
        return 404, error_body(404, f"{rest} not found")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


class BenchServer(ThreadingHTTPServer):
    """A threading HTTP server with a deep accept queue."""

    daemon_threads = True
    request_queue_size = 512


def serve_until_told(
    server: ThreadingHTTPServer, ready: dict[str, object], *, stop_on_eof: bool
) -> None:
    """Print the ready line, then serve until stopped (see ``wait_for_exit``)."""
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    wait_for_exit(server, stop_on_eof=stop_on_eof)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


def wait_for_exit(server: ThreadingHTTPServer, *, stop_on_eof: bool) -> None:
    """Shut down on SIGTERM or SIGINT, and when stdin closes if ``stop_on_eof``.

    The harness keeps a pipe to stdin open, so a server whose harness went away
    stops by itself.
    """

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not stop_on_eof:
        return

    def watch_stdin() -> None:
        while sys.stdin.buffer.read(1024):
            pass
        stop()

    threading.Thread(target=watch_stdin, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--memberships", type=int, default=20_000)
    parser.add_argument("--page-cap", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds")
    parser.add_argument("--limit", type=int, default=64, help="concurrent requests")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--stop-on-eof", action="store_true", help="stop when stdin closes"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    handler = type("BoundScimHandler", (ScimHandler,), {})
    server = BenchServer((HOST, args.port), handler)
    port = server.server_address[1]
    base_url = f"http://{HOST}:{port}{BASE_PATH}"
    directory = generate(
        args.users,
        args.groups,
        args.memberships,
        base_url=base_url,
        seed=args.seed,
    )
    state = ScimState(
        directory, page_cap=args.page_cap, latency=args.latency, limit=args.limit
    )
    handler.state = state
    pages = state.prerender()
    user_bytes = sum(map(len, directory.user_json))
    group_bytes = sum(map(len, directory.group_json))
    ready = {
        "port": port,
        "base_url": base_url,
        "pid": os.getpid(),
        "users": len(directory.user_json),
        "groups": len(directory.group_json),
        "memberships": directory.memberships,
        "nested_groups": directory.nested,
        "largest_group": directory.largest_group,
        "user_json_avg_bytes": round(user_bytes / max(1, len(directory.user_json))),
        "user_json_mb": round(user_bytes / 1e6, 1),
        "group_json_mb": round(group_bytes / 1e6, 1),
        "prerendered_pages": pages,
        "startup_s": round(time.perf_counter() - started, 2),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    serve_until_told(server, ready, stop_on_eof=args.stop_on_eof)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
