"""A fake Elimity Insights push endpoint that checks what connectors send.

It speaks the protocol of ``elimity_insights_client`` 10.2 (``/api/sources/{id}/…``,
and the older ``/api/custom-sources/{id}/…``): HTTP Basic with the source id as
username and the source token as password, zlib-compressed JSON snapshots that
must match the data model, and JSON connector logs. Accepted snapshots and log
batches are kept for assertions; refusals get a plain-text reason.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import json
import math
import re
import socket
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.serving import BackgroundServer

HOST = "127.0.0.1"
DATA_MODEL_PATH = Path(__file__).parents[2] / "elimity_scim" / "data_model.json"
MAX_BODY_BYTES = 1 << 30
# How often the serving thread checks for `stop`; the default 0.5 s slows tests.
POLL_SECONDS = 0.02

_PATH = re.compile(
    r"/api/(?:sources|custom-sources)/(?P<id>[^/]+)"
    r"/(?P<endpoint>snapshots|connector-logs|domain-graph-schema)/?"
)
_METHODS = {
    "snapshots": "POST",
    "connector-logs": "POST",
    "domain-graph-schema": "GET",
}
_ENTITY_KEYS = frozenset({"attributeAssignments", "id", "name", "type"})
_RELATIONSHIP_KEYS = frozenset(
    {
        "attributeAssignments",
        "fromEntityId",
        "toEntityId",
        "fromEntityType",
        "toEntityType",
    }
)
_DATE_KEYS = ("year", "month", "day")
_TIME_KEYS = ("hour", "minute", "second")
_LOG_KEYS = frozenset({"level", "message", "timestamp"})


class SnapshotError(ValueError):
    """A request body that Insights would refuse; the message says why."""


# -- Data model --------------------------------------------------------------


@dataclass(frozen=True)
class DataModel:
    """The declarations of a data model that a snapshot is checked against."""

    entity_attributes: Mapping[str, Mapping[str, str]]
    """Entity type → attribute id → value type, for every declared entity type."""
    relationship_attributes: Mapping[tuple[str, str], Mapping[str, str]]
    """(from type, to type) → attribute id → value type, per relationship type."""

    @classmethod
    def of(cls, data_model: Mapping[str, Any]) -> DataModel:
        """Read the JSON data model of a source (the domain graph schema)."""
        entities: dict[str, dict[str, str]] = {
            item["id"]: {} for item in data_model["entityTypes"]
        }
        for item in data_model["entityAttributeTypes"]:
            entities[item["entityTypeId"]][item["id"]] = item["type"]
        if "relationshipTypes" in data_model:
            pairs = [
                (item["fromEntityTypeId"], item["toEntityTypeId"])
                for item in data_model["relationshipTypes"]
            ]
        else:  # older exports list no relationship types: allow every pair
            pairs = [(a, b) for a in entities for b in entities]
        relationships: dict[tuple[str, str], dict[str, str]] = {
            pair: {} for pair in pairs
        }
        for item in data_model.get("relationshipAttributeTypes", []):
            pair = (item["parentType"], item["childType"])
            relationships.setdefault(pair, {})[item["id"]] = item["type"]
        return cls(entities, relationships)


def load_data_model(path: Path = DATA_MODEL_PATH) -> dict[str, Any]:
    """The project's data model, ``elimity_scim/data_model.json``."""
    data_model: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data_model


# -- Parsing and validation ----------------------------------------------------


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            msg = f"duplicate JSON key {key!r}"
            raise SnapshotError(msg)
        result[key] = value
    return result


def _constant(name: str) -> float:
    msg = f"{name} is not JSON"
    raise SnapshotError(msg)


def parse_json(body: bytes) -> Any:
    """Decode strict UTF-8 JSON: no duplicate keys, no NaN or infinities."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"body is not UTF-8: {exc}"
        raise SnapshotError(msg) from exc
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        msg = f"body is not JSON: {exc}"
        raise SnapshotError(msg) from exc


def parse_snapshot(body: bytes) -> Any:
    """Decompress a zlib stream (RFC 1950; not gzip) and decode its JSON."""
    decompressor = zlib.decompressobj()
    try:
        text = decompressor.decompress(body) + decompressor.flush()
    except zlib.error as exc:
        msg = f"body is not a zlib stream: {exc}"
        raise SnapshotError(msg) from exc
    if not decompressor.eof:
        msg = "body is a truncated zlib stream"
        raise SnapshotError(msg)
    if decompressor.unused_data:
        msg = "body has data after the end of its zlib stream"
        raise SnapshotError(msg)
    return parse_json(text)


def _exact_keys(value: object, keys: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        msg = f"{where}: expected an object, got {type(value).__name__}"
        raise SnapshotError(msg)
    missing = sorted(keys - value.keys())
    extra = sorted(value.keys() - keys)
    if missing or extra:
        msg = f"{where}: missing keys {missing}, unexpected keys {extra}"
        raise SnapshotError(msg)
    return value


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parts(value: object, keys: tuple[str, ...], where: str) -> list[int]:
    parts = _exact_keys(value, frozenset(keys), where)
    if not all(_integer(parts[key]) for key in keys):
        msg = f"{where}: {', '.join(keys)} must be integers"
        raise SnapshotError(msg)
    return [parts[key] for key in keys]


def check_moment(kind: str, value: object, where: str) -> None:
    """Check a date, dateTime or time object: exact keys, integers in range."""
    keys = {
        "date": _DATE_KEYS,
        "dateTime": _DATE_KEYS + _TIME_KEYS,
        "time": _TIME_KEYS,
    }[kind]
    parts = _parts(value, keys, where)
    try:
        if kind == "time":
            datetime.time(*parts)
        else:
            datetime.datetime(*parts)
    except (ValueError, OverflowError) as exc:
        msg = f"{where}: {kind} out of range: {exc}"
        raise SnapshotError(msg) from exc


def check_value(declared: str, value: object, where: str) -> None:
    """Check a ``{"type", "value"}`` object against its declared attribute type."""
    typed = _exact_keys(value, frozenset({"type", "value"}), where)
    if typed["type"] != declared:
        msg = f"{where}: attribute type is {declared}, value type is {typed['type']!r}"
        raise SnapshotError(msg)
    inner = typed["value"]
    if declared == "boolean":
        valid = isinstance(inner, bool)
    elif declared == "number":
        valid = isinstance(inner, int | float) and not isinstance(inner, bool)
        valid = valid and math.isfinite(inner)
    elif declared == "string":
        valid = isinstance(inner, str)
    elif declared in ("date", "dateTime", "time"):
        check_moment(declared, inner, f"{where}.value")
        valid = True
    else:
        msg = f"{where}: the data model declares an unknown type {declared!r}"
        raise SnapshotError(msg)
    if not valid:
        msg = f"{where}: {json.dumps(inner)} is not a valid {declared}"
        raise SnapshotError(msg)


def _check_assignments(
    record: dict[str, Any],
    declared: Mapping[str, str],
    owner: str,
    where: str,
    strict: bool,
) -> None:
    assignments = record["attributeAssignments"]
    if not isinstance(assignments, list):
        msg = f"{where}.attributeAssignments: expected an array"
        raise SnapshotError(msg)
    seen: set[str] = set()
    for index, assignment in enumerate(assignments):
        at = f"{where}.attributeAssignments[{index}]"
        item = _exact_keys(assignment, frozenset({"attributeTypeId", "value"}), at)
        attribute = item["attributeTypeId"]
        if not isinstance(attribute, str) or attribute not in declared:
            msg = f"{at}: {owner} has no attribute type {attribute!r}"
            raise SnapshotError(msg)
        if strict and attribute in seen:
            msg = f"{at}: attribute {attribute!r} is assigned twice"
            raise SnapshotError(msg)
        seen.add(attribute)
        check_value(declared[attribute], item["value"], f"{at}.value")


def _identifier(record: dict[str, Any], key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value:
        msg = f"{where}.{key}: expected a non-empty string, got {json.dumps(value)}"
        raise SnapshotError(msg)
    return value


def _records(snapshot: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Entities and relationships, including the JS client's ``streamItems``."""
    entities = list(snapshot["entities"])
    relationships = list(snapshot["relationships"])
    for index, item in enumerate(snapshot.get("streamItems", [])):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in ("entity", "relationship"):
            msg = f"streamItems[{index}]: type must be entity or relationship"
            raise SnapshotError(msg)
        _exact_keys(item, frozenset({"type", kind}), f"streamItems[{index}]")
        (entities if kind == "entity" else relationships).append(item[kind])
    return entities, relationships


def validate_snapshot(
    snapshot: object, model: DataModel, *, strict: bool = True
) -> dict[str, Any]:
    """Check a decoded snapshot against a data model and return it.

    ``strict`` also refuses duplicate entities, repeated attributes in a record,
    relationships between entities that the snapshot lacks, and duplicate
    relationships; whether Insights does is not documented.
    """
    if not isinstance(snapshot, dict):
        msg = "snapshot: expected a JSON object"
        raise SnapshotError(msg)
    allowed = {"entities", "relationships", "historyTimestamp", "streamItems"}
    missing = sorted({"entities", "relationships"} - snapshot.keys())
    extra = sorted(snapshot.keys() - allowed)
    if missing or extra:
        msg = f"snapshot: missing keys {missing}, unexpected keys {extra}"
        raise SnapshotError(msg)
    for key in ("entities", "relationships", "streamItems"):
        if key in snapshot and not isinstance(snapshot[key], list):
            msg = f"snapshot.{key}: expected an array"
            raise SnapshotError(msg)
    if "historyTimestamp" in snapshot:
        check_moment("dateTime", snapshot["historyTimestamp"], "historyTimestamp")

    entities, relationships = _records(snapshot)
    known: set[tuple[str, str]] = set()
    for index, value in enumerate(entities):
        where = f"entities[{index}]"
        entity = _exact_keys(value, _ENTITY_KEYS, where)
        entity_id = _identifier(entity, "id", where)
        if not isinstance(entity["name"], str):
            msg = f"{where}.name: expected a string"
            raise SnapshotError(msg)
        kind = entity["type"]
        if not isinstance(kind, str) or kind not in model.entity_attributes:
            msg = f"{where}.type: undeclared entity type {kind!r}"
            raise SnapshotError(msg)
        if strict and (kind, entity_id) in known:
            msg = f"{where}: duplicate {kind} id {entity_id!r}"
            raise SnapshotError(msg)
        known.add((kind, entity_id))
        declared = model.entity_attributes[kind]
        _check_assignments(entity, declared, f"entity type {kind!r}", where, strict)

    pairs: set[tuple[str, str, str, str]] = set()
    for index, value in enumerate(relationships):
        where = f"relationships[{index}]"
        relationship = _exact_keys(value, _RELATIONSHIP_KEYS, where)
        from_id = _identifier(relationship, "fromEntityId", where)
        to_id = _identifier(relationship, "toEntityId", where)
        from_type = relationship["fromEntityType"]
        to_type = relationship["toEntityType"]
        types = (from_type, to_type)
        if not all(isinstance(t, str) for t in types) or (
            types not in model.relationship_attributes
        ):
            msg = f"{where}: undeclared relationship type {from_type!r} → {to_type!r}"
            raise SnapshotError(msg)
        if strict:
            for end_type, end_id in ((from_type, from_id), (to_type, to_id)):
                if (end_type, end_id) not in known:
                    msg = f"{where}: no {end_type} entity with id {end_id!r}"
                    raise SnapshotError(msg)
            pair = (from_type, from_id, to_type, to_id)
            if pair in pairs:
                msg = f"{where}: duplicate relationship {from_id!r} → {to_id!r}"
                raise SnapshotError(msg)
            pairs.add(pair)
        declared = model.relationship_attributes[types]
        owner = f"relationship type {from_type!r} → {to_type!r}"
        _check_assignments(relationship, declared, owner, where, strict)
    return snapshot


def validate_logs(logs: object) -> list[dict[str, Any]]:
    """Check a batch of connector logs and return it."""
    if not isinstance(logs, list):
        msg = "logs: expected a JSON array"
        raise SnapshotError(msg)
    for index, value in enumerate(logs):
        where = f"logs[{index}]"
        log = _exact_keys(value, _LOG_KEYS, where)
        if log["level"] not in ("info", "alert"):
            msg = f"{where}.level: {json.dumps(log['level'])} is not info or alert"
            raise SnapshotError(msg)
        if not isinstance(log["message"], str):
            msg = f"{where}.message: expected a string"
            raise SnapshotError(msg)
        _check_timestamp(log["timestamp"], f"{where}.timestamp")
    return logs


def _check_timestamp(value: object, where: str) -> None:
    if not isinstance(value, str) or len(value) < 11 or value[10] != "T":
        msg = f"{where}: {json.dumps(value)} is not an ISO-8601 date and time"
        raise SnapshotError(msg)
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError as exc:
        msg = f"{where}: {json.dumps(value)} is not an ISO-8601 date and time"
        raise SnapshotError(msg) from exc
    if moment.utcoffset() is None:
        msg = f"{where}: {json.dumps(value)} has no UTC offset"
        raise SnapshotError(msg)


# -- Summaries for assertions ----------------------------------------------------


@dataclass
class Summary:
    """A snapshot reduced to plain Python values, for assertions.

    Each user and group maps attribute ids to plain values (str, bool, int or
    float, `datetime.date`, UTC `datetime.datetime`, `datetime.time`), plus the
    entity name under ``"name"``.
    """

    users: dict[str, dict[str, object]] = field(default_factory=dict)
    groups: dict[str, dict[str, object]] = field(default_factory=dict)
    user_memberships: dict[tuple[str, str], object] = field(default_factory=dict)
    """(user id, group id) → the membershipType attribute, or None without one."""
    group_memberships: set[tuple[str, str]] = field(default_factory=set)
    """(child group id, parent group id)."""


def plain_value(value: Mapping[str, Any]) -> object:
    """The Python value of a snapshot value object ``{"type", "value"}``."""
    kind, inner = value["type"], value["value"]
    if kind == "date":
        return datetime.date(*(inner[key] for key in _DATE_KEYS))
    if kind == "dateTime":
        parts = (inner[key] for key in _DATE_KEYS + _TIME_KEYS)
        return datetime.datetime(*parts, tzinfo=datetime.UTC)
    if kind == "time":
        return datetime.time(*(inner[key] for key in _TIME_KEYS))
    return inner


def _attributes(record: Mapping[str, Any]) -> dict[str, object]:
    return {
        assignment["attributeTypeId"]: plain_value(assignment["value"])
        for assignment in record["attributeAssignments"]
    }


def summarize(snapshot: dict[str, Any]) -> Summary:
    """Reduce an accepted snapshot to users, groups and memberships."""
    summary = Summary()
    entities, relationships = _records(snapshot)
    for entity in entities:
        attributes = _attributes(entity)
        if "name" in attributes:
            msg = "an attribute called 'name' would hide the entity name"
            raise ValueError(msg)
        attributes["name"] = entity["name"]
        if entity["type"] == "user":
            summary.users[entity["id"]] = attributes
        elif entity["type"] == "group":
            summary.groups[entity["id"]] = attributes
    for relationship in relationships:
        pair = (relationship["fromEntityId"], relationship["toEntityId"])
        types = (relationship["fromEntityType"], relationship["toEntityType"])
        if types == ("user", "group"):
            attributes = _attributes(relationship)
            summary.user_memberships[pair] = attributes.get("membershipType")
        elif types == ("group", "group"):
            summary.group_memberships.add(pair)
    return summary


# -- The server ------------------------------------------------------------------


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class FakeInsights(BackgroundServer):
    """Elimity Insights' push API for one source, on ``127.0.0.1`` at a free port.

    Fault knobs: set ``fail_snapshots_with`` (or ``fail_logs_with``) to a status
    code to answer every snapshot (or log) upload with it, or ``drop_snapshots``
    to hang up on snapshot uploads without an answer.
    """

    def __init__(
        self,
        *,
        source_id: int = 42,
        token: str = "test-insights-token",
        data_model: Mapping[str, Any] | None = None,
        strict: bool = True,
    ) -> None:
        self.source_id = source_id
        self.token = token
        self.data_model = dict(
            data_model if data_model is not None else load_data_model()
        )
        self.model = DataModel.of(self.data_model)
        self.strict = strict
        self.snapshots: list[dict[str, Any]] = []
        """Every accepted snapshot, in arrival order."""
        self.bodies: list[bytes] = []
        """The request body of every accepted snapshot, as sent (compressed)."""
        self.logs: list[list[dict[str, Any]]] = []
        """Every accepted batch of connector logs, in arrival order."""
        self.rejections: list[str] = []
        """The reason of every refused request (4xx), in arrival order."""
        self.requests: list[tuple[str, str]] = []
        """(method, path with query, as sent) of every request."""
        self.snapshot_attempts = 0
        """POSTs to the snapshot endpoint, whatever their outcome."""
        self.fail_snapshots_with: int | None = None
        self.fail_logs_with: int | None = None
        self.drop_snapshots = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def latest(self) -> dict[str, Any] | None:
        """The last accepted snapshot: a reload replaces the whole graph."""
        with self._lock:
            return self.snapshots[-1] if self.snapshots else None

    @property
    def url(self) -> str:
        """The bare base URL to configure the client with, without a slash."""
        if self._server is None:
            msg = "the fake is not running"
            raise RuntimeError(msg)
        return f"http://{HOST}:{self._server.server_port}"

    def start(self) -> FakeInsights:
        """Bind a free port and serve in a daemon thread; return self."""
        fake = self

        class Handler(_Handler):
            owner = fake

        server = ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        return self._serve(server, POLL_SECONDS, "fake-insights")

    def summary(self) -> Summary:
        """`summarize` of the latest snapshot."""
        latest = self.latest
        if latest is None:
            msg = "no snapshot was accepted"
            raise AssertionError(msg)
        return summarize(latest)

    # -- Request handling, called from the handler threads -------------------

    def _authenticate(self, source: str, authorization: str | None) -> None:
        scheme, _, credentials = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, separator, password = decoded.partition(":")
        if scheme.lower() != "basic" or not separator:
            raise _Refusal(401, "HTTP Basic credentials are required")
        if username != source:
            raise _Refusal(401, "the username must be the source id of the path")
        if source != str(self.source_id):
            raise _Refusal(404, f"no source with id {source}")
        if password != self.token:
            raise _Refusal(401, "wrong source token")

    def _snapshot(self, content_type: str | None, body: bytes) -> None:
        _content_type(content_type, "application/octet-stream")
        snapshot = validate_snapshot(
            parse_snapshot(body), self.model, strict=self.strict
        )
        with self._lock:
            self.snapshots.append(snapshot)
            self.bodies.append(body)

    def _logs(self, content_type: str | None, body: bytes) -> None:
        _content_type(content_type, "application/json")
        logs = validate_logs(parse_json(body))
        with self._lock:
            self.logs.append(logs)


def _content_type(actual: str | None, expected: str) -> None:
    media_type = (actual or "").partition(";")[0].strip().lower()
    if media_type != expected:
        msg = f"Content-Type must be {expected}, not {actual!r}"
        raise SnapshotError(msg)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeInsights
    server_version = "FakeInsights/1"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def _target(self) -> str:
        # http.server collapses a leading "//" in self.path; the request line
        # keeps what the client sent, e.g. after a base URL with a trailing slash.
        return self.requestline.split(" ")[1]

    def _handle(self) -> None:
        fake = self.owner
        with fake._lock:
            fake.requests.append((self.command, self._target))
        try:
            body = self._read_body()
            self._serve(fake, body)
        except _Refusal as refusal:
            with fake._lock:
                fake.rejections.append(refusal.reason)
            self._reply(refusal.status, refusal.reason)
        except SnapshotError as exc:
            with fake._lock:
                fake.rejections.append(str(exc))
            self._reply(400, str(exc))
        except Exception as exc:  # a bug of the fake: answer, and show it
            reason = f"the fake failed: {exc!r}"
            with fake._lock:
                fake.rejections.append(reason)
            self._reply(500, reason)

    def _serve(self, fake: FakeInsights, body: bytes) -> None:
        path = self._target.partition("?")[0]
        match = _PATH.fullmatch(path)
        if match is None:
            raise _Refusal(404, f"no such endpoint: {path}")
        endpoint = match["endpoint"]
        if self.command != _METHODS[endpoint]:
            raise _Refusal(405, f"{endpoint} accepts only {_METHODS[endpoint]}")

        if endpoint == "snapshots":
            with fake._lock:
                fake.snapshot_attempts += 1
            if fake.drop_snapshots:
                self._hang_up()
                return
            if fake.fail_snapshots_with is not None:
                self._reply(fake.fail_snapshots_with, "injected failure")
                return
        if endpoint == "connector-logs" and fake.fail_logs_with is not None:
            self._reply(fake.fail_logs_with, "injected failure")
            return

        fake._authenticate(match["id"], self.headers.get("Authorization"))
        content_type = self.headers.get("Content-Type")
        if endpoint == "snapshots":
            fake._snapshot(content_type, body)
        elif endpoint == "connector-logs":
            fake._logs(content_type, body)
        else:
            data = json.dumps(fake.data_model).encode()
            self._reply(200, data, "application/json")
            return
        self._reply(204)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise _Refusal(411, "send a Content-Length, not a Transfer-Encoding")
        if length is None:
            return b""
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise _Refusal(413, f"Content-Length {length} is not acceptable")
        return self.rfile.read(int(length))

    def _reply(
        self,
        status: int,
        body: str | bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status, _phrase(status))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Elimity Insights"')
        if status == 405:
            endpoint = self.path.rstrip("/").rsplit("/", 1)[-1]
            self.send_header("Allow", _METHODS.get(endpoint, "GET, POST"))
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _phrase(status: int) -> str:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase
    return ""


def iter_entities(snapshot: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
    """The entities of one type in a snapshot."""
    entities, _ = _records(snapshot)
    return (entity for entity in entities if entity["type"] == kind)
