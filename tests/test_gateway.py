"""Pull mode: the custom gateway, driven in process the way Insights calls it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from elimity.insights.customgateway.v1alpha2.customgateway_connect import (
    ServiceClient,
)
from elimity.insights.customgateway.v1alpha2.customgateway_pb2 import (
    MetaRequest,
    PerformImportRequest,
)
from elimity_insights_client import (
    BooleanValue,
    DateTime,
    DateTimeValue,
    DateValue,
    NumberValue,
    StringValue,
    TimeValue,
)
from google.protobuf.json_format import ParseDict

from elimity_scim.connector._gateway_service import (
    INITIAL_CURSOR,
    iterate_in_thread,
    value_message,
)
from elimity_scim.connector.errors import ConfigurationError
from elimity_scim.connector.gateway import (
    GatewayConfig,
    JwtSettings,
    add_serve_command,
    create_app,
    gateway_config,
    resolve_fields,
    serve_command,
    serve_settings,
    url_allowed,
)
from elimity_scim.connector.logs import RedactingFormatter
from elimity_scim.source import ScimSource
from tests.conftest import BEARER_TOKEN, MakeScim2Server
from tests.support.directory import SeededDirectory, example_directory
from tests.support.fake_insights import (
    DataModel,
    Summary,
    load_data_model,
    summarize,
    validate_snapshot,
)
from tests.support.scim2 import Scim2Server

ISSUER = "https://auth.elimity.com/"
SOURCE_ID = "42"
INSIGHTS_URL = "https://example.elimity.com"
GATEWAY_URL = "https://gateway.example.com"
KID = "test-key"
MANIFEST = ScimSource().manifest()
VERSION = f"scim-{MANIFEST['version']}"


# -- Keys and tokens ----------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    private: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey
    public_pem: Path


def make_keys(directory: Path) -> Keys:
    """Two RSA keys; the public PEM of the first is what the gateway trusts."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = directory / "public.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    return Keys(private, other, pem)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("jwt"))


def mint(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    """An RS256 token as Insights sends it; ``None`` overrides drop a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "gateway",
        "sub": "insights@clients",
        "iat": now,
        "exp": now + 300,
        "source_id": SOURCE_ID,
        "base_url": INSIGHTS_URL,
        "gateway_url": GATEWAY_URL,
    }
    claims.update(overrides)
    payload = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": KID})


def jwt_settings(keys: Keys, **changes: Any) -> JwtSettings:
    values: dict[str, Any] = {
        "source_id": SOURCE_ID,
        "base_url": INSIGHTS_URL,
        "gateway_url": GATEWAY_URL + "/",
        "public_key_file": keys.public_pem,
    }
    values.update(changes)
    return JwtSettings(**values)


def config(
    jwt_config: JwtSettings | None,
    *,
    allowed: tuple[str, ...] = (),
    allow_empty: bool = False,
    **settings: str,
) -> GatewayConfig:
    environ = {f"ELIMITY_SCIM_{key.upper()}": value for key, value in settings.items()}
    return GatewayConfig(
        settings=serve_settings(MANIFEST, config_file=None, environ=environ),
        jwt=jwt_config,
        allowed_base_urls=allowed,
        allow_empty=allow_empty,
    )


# -- A fake Insights driver ---------------------------------------------------------


@dataclass
class Imported:
    """Everything one import brought, in the order it arrived."""

    version: str = ""
    initial_cursor: object = None
    kinds: list[str] = field(default_factory=list)
    entities: list[Any] = field(default_factory=list)
    relationships: list[Any] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    cursors: list[object] = field(default_factory=list)
    calls: int = 0
    error: ConnectError | None = None

    def snapshot(self) -> dict[str, Any]:
        """The import as the push snapshot JSON, for the fake Insights' checks."""
        return {
            "entities": [
                {
                    "attributeAssignments": _assignments(e.attribute_assignments),
                    "id": e.id,
                    "name": e.name,
                    "type": e.type,
                }
                for e in self.entities
            ],
            "relationships": [
                {
                    "attributeAssignments": _assignments(r.attribute_assignments),
                    "fromEntityId": r.from_entity_id,
                    "toEntityId": r.to_entity_id,
                    "fromEntityType": r.from_entity_type,
                    "toEntityType": r.to_entity_type,
                }
                for r in self.relationships
            ],
        }

    def summary(self) -> Summary:
        """Check the import against the data model and reduce it to plain values."""
        model = DataModel.of(load_data_model())
        return summarize(validate_snapshot(self.snapshot(), model))


def _assignments(assignments: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"attributeTypeId": key, "value": plain_value(value)}
        for key, value in sorted(assignments.items())
    ]


def plain_value(value: Any) -> dict[str, Any]:
    """A protocol value as the push snapshot's ``{"type", "value"}`` object."""
    kind = value.WhichOneof("value")
    if kind in ("date", "date_time", "time"):
        moment = getattr(value, kind).ToDatetime()
        day = {"year": moment.year, "month": moment.month, "day": moment.day}
        clock = {"hour": moment.hour, "minute": moment.minute, "second": moment.second}
        if kind == "date":
            assert clock == {"hour": 0, "minute": 0, "second": 0}
            return {"type": "date", "value": day}
        if kind == "time":
            assert day == {"year": 1, "month": 1, "day": 1}
            return {"type": "time", "value": clock}
        return {"type": "dateTime", "value": day | clock}
    names = {"boolean": "boolean", "number": "number", "string": "string"}
    return {"type": names[kind], "value": getattr(value, kind)}


async def drive_async(
    client: ServiceClient,
    fields: Mapping[str, object],
    *,
    token: str | None = None,
    version: str | None = None,
    cursor: object = "meta",
) -> Imported:
    """Play Insights: Meta, then PerformImport for every cursor until none is left."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result = Imported()
    try:
        meta = await client.meta(MetaRequest(), headers=headers)
    except ConnectError as exc:
        result.error = exc
        return result
    result.version = meta.version
    result.initial_cursor = meta.initial_cursor.string_value
    pending = [meta.initial_cursor if cursor == "meta" else cursor]
    while pending and result.error is None:
        request = PerformImportRequest(
            version=meta.version if version is None else version
        )
        current = pending.pop(0)
        if current is not None:
            if isinstance(current, str | float | dict):
                ParseDict(current, request.cursor)
            else:
                request.cursor.CopyFrom(current)
        for key, value in fields.items():
            ParseDict(value, request.fields[key])
        result.calls += 1
        try:
            async for item in client.perform_import(request, headers=headers):
                kind = item.WhichOneof("value")
                result.kinds.append(kind)
                if kind == "entity":
                    result.entities.append(item.entity)
                elif kind == "relationship":
                    result.relationships.append(item.relationship)
                elif kind == "log":
                    level = item.log.level.WhichOneof("value")
                    result.logs.append((level, item.log.message))
                else:
                    result.cursors.append(item.cursor)
                    pending.append(item.cursor)
        except ConnectError as exc:
            result.error = exc
    return result


def drive(app: Any, fields: Mapping[str, object], **options: Any) -> Imported:
    """Run the driver against an ASGI app, in process."""

    async def main() -> Imported:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as s:
            client = ServiceClient("http://gw", session=s)
            return await drive_async(client, fields, **options)

    return asyncio.run(main())


def scim_fields(server: Scim2Server, **changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "baseUrl": server.base_url,
        "password": BEARER_TOKEN,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def assert_matches_directory(summary: Summary, seeded: SeededDirectory) -> None:
    assert set(summary.users) == set(seeded.users)
    assert set(summary.groups) == set(seeded.groups)
    for user_id, resource in seeded.users.items():
        assert summary.users[user_id]["userName"] == resource["userName"]
        assert summary.users[user_id]["name"] == resource.get(
            "displayName", resource["userName"]
        )
    for group_id, resource in seeded.groups.items():
        assert summary.groups[group_id]["name"] == resource["displayName"]
    direct = {p for p, kind in summary.user_memberships.items() if kind == "direct"}
    assert direct == seeded.user_memberships
    assert summary.group_memberships == seeded.group_memberships


# -- Imports ------------------------------------------------------------------------


def test_import_streams_the_whole_directory(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory], keys: Keys
) -> None:
    server, seeded = scim2_server_bearer
    app = create_app(ScimSource(), config(jwt_settings(keys), page_size="13"))

    result = drive(app, scim_fields(server), token=mint(keys.private))

    assert result.error is None
    assert result.version == VERSION
    assert result.initial_cursor == INITIAL_CURSOR
    assert result.calls == 1
    assert result.cursors == []
    assert_matches_directory(result.summary(), seeded)
    # Every entity comes before the first relationship; the log item is last.
    first_relationship = result.kinds.index("relationship")
    assert "entity" not in result.kinds[first_relationship:]
    assert result.kinds[-1] == "log"
    assert result.logs == [
        (
            "info",
            result.logs[0][1],
        )
    ]
    assert result.logs[0][1].startswith(
        f"Imported {len(seeded.users)} Users, {len(seeded.groups)} Groups"
    )


def test_basic_auth_fields_and_an_explicit_initial_cursor(
    scim2_server_basic: tuple[Scim2Server, SeededDirectory], keys: Keys
) -> None:
    server, seeded = scim2_server_basic
    assert server.basic is not None
    app = create_app(ScimSource(), config(jwt_settings(keys)))
    fields = {
        "baseUrl": server.base_url + "/",
        "username": server.basic[0],
        "password": server.basic[1],
    }

    result = drive(app, fields, token=mint(keys.private), cursor=INITIAL_CURSOR)

    assert result.error is None
    assert_matches_directory(result.summary(), seeded)


def test_unset_cursor_also_imports_everything(
    scim2_server_basic: tuple[Scim2Server, SeededDirectory],
) -> None:
    server, seeded = scim2_server_basic
    assert server.basic is not None
    allowed = (server.base_url,)
    app = create_app(ScimSource(), config(None, allowed=allowed))
    fields = {
        "baseUrl": server.base_url,
        "username": server.basic[0],
        "password": server.basic[1],
    }

    result = drive(app, fields, cursor=None)

    assert result.error is None
    assert len(result.summary().users) == len(seeded.users)


# -- Authentication -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing bearer token"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"source_id": "43"}, "source_id"),
        ({"source_id": None}, "source_id is missing"),
        ({"base_url": "https://other.elimity.com"}, "base_url"),
        ({"gateway_url": "https://evil.example.com"}, "gateway_url"),
        ({"iss": "https://evil.example.com/"}, "issuer"),
        ("other-key", "signature"),
        ("not-a-jwt", "invalid bearer token"),
    ],
    ids=[
        "missing",
        "expired",
        "wrong-audience",
        "wrong-source-id",
        "no-source-id",
        "wrong-base-url",
        "wrong-gateway-url",
        "wrong-issuer",
        "wrong-key",
        "garbage",
    ],
)
def test_calls_without_a_valid_token_are_unauthenticated(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    keys: Keys,
    token: object,
    reason: str,
) -> None:
    server, _ = scim2_server_bearer
    app = create_app(ScimSource(), config(jwt_settings(keys)))
    if isinstance(token, dict):
        bearer: str | None = mint(keys.private, **token)
    elif token == "other-key":
        bearer = mint(keys.other)
    else:
        bearer = token if isinstance(token, str) else None

    result = drive(app, scim_fields(server), token=bearer)

    assert result.error is not None
    assert result.error.code == Code.UNAUTHENTICATED
    assert reason.lower() in result.error.message.lower()
    assert result.calls == 0  # Meta is refused already

    async def import_only() -> list[object]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as s:
            client = ServiceClient("http://gw", session=s)
            request = PerformImportRequest(version=VERSION)
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            return [i async for i in client.perform_import(request, headers=headers)]

    # PerformImport without Meta first is refused the same way.
    with pytest.raises(ConnectError) as caught:
        asyncio.run(import_only())
    assert caught.value.code == Code.UNAUTHENTICATED


def test_tokens_are_checked_against_a_local_jwks(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory], keys: Keys
) -> None:
    server, seeded = scim2_server_bearer
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(keys.private.public_key(), as_dict=True)
    body = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]})
    fetches: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    jwks = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=jwks.serve_forever, args=(0.02,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{jwks.server_port}/.well-known/jwks.json"
        settings = jwt_settings(keys, public_key_file=None, jwks_url=url)
        app = create_app(ScimSource(), config(settings))

        good = drive(app, scim_fields(server), token=mint(keys.private))
        bad = drive(app, scim_fields(server), token=mint(keys.other))
    finally:
        jwks.shutdown()
        jwks.server_close()

    assert good.error is None
    assert len(good.summary().users) == len(seeded.users)
    assert bad.error is not None
    assert bad.error.code == Code.UNAUTHENTICATED
    assert fetches
    assert set(fetches) == {"/.well-known/jwks.json"}


def test_unreachable_jwks_is_unavailable(keys: Keys) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_port  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/jwks.json"
    app = create_app(
        ScimSource(), config(jwt_settings(keys, public_key_file=None, jwks_url=url))
    )

    result = drive(app, {}, token=mint(keys.private))

    assert result.error is not None
    assert result.error.code == Code.UNAVAILABLE


# -- Protocol errors ----------------------------------------------------------------


def test_version_mismatch_is_a_failed_precondition(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory], keys: Keys
) -> None:
    server, _ = scim2_server_bearer
    app = create_app(ScimSource(), config(jwt_settings(keys)))

    result = drive(app, scim_fields(server), token=mint(keys.private), version="v0")

    assert result.error is not None
    assert result.error.code == Code.FAILED_PRECONDITION
    assert VERSION in result.error.message
    assert "'v0'" in result.error.message
    assert result.kinds == []


def test_unknown_cursor_is_an_invalid_argument(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory], keys: Keys
) -> None:
    server, _ = scim2_server_bearer
    app = create_app(ScimSource(), config(jwt_settings(keys)))

    result = drive(app, scim_fields(server), token=mint(keys.private), cursor=3.0)

    assert result.error is not None
    assert result.error.code == Code.INVALID_ARGUMENT
    assert result.kinds == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pageSize": 10}, "pageSize are not options"),
        ({"password": None}, "missing required field Password"),
        ({"baseUrl": "ftp://127.0.0.1/v2"}, "must be an http:// or https:// URL"),
        ({"username": 7}, "Username must be a string"),
        ({"baseUrl": "http://scim.example.com/v2"}, "plain http://"),
    ],
    ids=["setting", "missing-password", "bad-scheme", "not-a-string", "plain-http"],
)
def test_invalid_fields_alert_then_fail(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    keys: Keys,
    changes: dict[str, object],
    expected: str,
) -> None:
    server, _ = scim2_server_bearer
    app = create_app(ScimSource(), config(jwt_settings(keys)))

    result = drive(app, scim_fields(server, **changes), token=mint(keys.private))

    assert result.error is not None
    assert result.error.code == Code.INVALID_ARGUMENT
    assert expected in result.error.message
    assert result.kinds == ["log"]
    assert result.logs == [("alert", result.error.message)]
    assert BEARER_TOKEN not in result.error.message


def test_fields_are_validated_as_run_validates_them() -> None:
    settings = serve_settings(MANIFEST, config_file=None, environ={})
    options = resolve_fields(
        MANIFEST,
        {"baseUrl": "https://x/v2", "password": "pw", "username": ""},
        settings,
    )
    assert options["username"] is None
    assert options["pageSize"] == 100
    assert options["baseUrl"] == "https://x/v2"
    with pytest.raises(ConfigurationError, match=r"Password must be a string"):
        resolve_fields(MANIFEST, {"baseUrl": "https://x", "password": 5}, settings)
    with pytest.raises(ConfigurationError, match=r"field\(s\) concurrency, typo"):
        resolve_fields(MANIFEST, {"typo": "1", "concurrency": 2.0}, settings)


# -- Failures while reading ----------------------------------------------------------


def test_scim_failure_mid_read_sends_an_alert_and_an_error(
    make_scim2_server: MakeScim2Server, keys: Keys
) -> None:
    directory = example_directory(users=12, groups=3, seed=3)
    server = make_scim2_server(directory, bearer_tokens=[BEARER_TOKEN])
    # Two requests probe attributes= (whole, then narrowed), then the listing's
    # first page streams before the break.
    server.break_after("Users", 4)
    app = create_app(
        ScimSource(),
        config(jwt_settings(keys), page_size="5", retry_attempts="1"),
    )

    result = drive(app, scim_fields(server), token=mint(keys.private))

    assert result.error is not None
    assert result.error.code == Code.UNAVAILABLE
    assert "Import failed" in result.error.message
    assert result.entities, "the first page should have been streamed already"
    assert len(result.entities) < 12
    assert result.kinds[-1] == "log"
    assert result.logs == [("alert", result.error.message)]
    assert not any(level == "info" for level, _ in result.logs)


def test_refused_credentials_are_reported_without_the_secret(
    keys: Keys,
) -> None:
    secret = "scim-canary-3e9d1c7a"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            status = 401 if "Users" in self.path else 404
            detail = json.dumps({"detail": f"bad credentials {header}"})
            self.send_response(status)
            self.send_header("Content-Type", "application/scim+json")
            self.end_headers()
            self.wfile.write(detail.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    echo = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=echo.serve_forever, args=(0.02,), daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{echo.server_port}/scim/v2"
        formatter = RedactingFormatter("%(message)s")
        app = create_app(ScimSource(), config(jwt_settings(keys)), formatter)
        fields = {"baseUrl": base_url, "password": secret}
        result = drive(app, fields, token=mint(keys.private))
    finally:
        echo.shutdown()
        echo.server_close()

    assert result.error is not None
    assert result.error.code == Code.FAILED_PRECONDITION
    assert "status 401" in result.error.message
    assert "[redacted]" in result.error.message
    assert result.logs == [("alert", result.error.message)]
    for text in (result.error.message, *(message for _, message in result.logs)):
        assert secret not in text
    assert formatter.redact(secret) == "[redacted]"  # log lines are masked too


def test_an_empty_reading_is_refused_unless_allowed(
    make_scim2_server: MakeScim2Server, keys: Keys
) -> None:
    server = make_scim2_server(bearer_tokens=[BEARER_TOKEN])
    refusing = create_app(ScimSource(), config(jwt_settings(keys)))
    allowing = create_app(ScimSource(), config(jwt_settings(keys), allow_empty=True))

    refused = drive(refusing, scim_fields(server), token=mint(keys.private))
    allowed = drive(allowing, scim_fields(server), token=mint(keys.private))

    assert refused.error is not None
    assert refused.error.code == Code.FAILED_PRECONDITION
    assert "without any user" in refused.error.message
    assert refused.logs == [("alert", refused.error.message)]
    assert allowed.error is None
    assert allowed.logs == [("info", "Imported 0 Users, 0 Groups, 0 relationships")]


# -- Without authentication -----------------------------------------------------------


def test_without_auth_only_allowed_base_urls_are_read(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
) -> None:
    server, seeded = scim2_server_bearer
    prefix = server.base_url.rsplit("/", 1)[0] + "/v2"
    app = create_app(ScimSource(), config(None, allowed=(prefix,), page_size="50"))

    allowed = drive(app, scim_fields(server))
    elsewhere = drive(app, scim_fields(server, baseUrl="http://127.0.0.1:9/v2"))
    sibling = drive(app, scim_fields(server, baseUrl=server.base_url + "x"))

    assert allowed.error is None
    assert_matches_directory(allowed.summary(), seeded)
    for refused in (elsewhere, sibling):
        assert refused.error is not None
        assert refused.error.code == Code.PERMISSION_DENIED
        assert "not under an allowed prefix" in refused.error.message
        assert refused.logs == [("alert", refused.error.message)]
        assert refused.entities == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://scim.example.com/v2", True),
        ("https://scim.example.com/v2/", True),
        ("https://SCIM.example.com:443/v2/tenant", True),
        ("https://scim.example.com/v2x", False),
        ("https://scim.example.com/v", False),
        ("https://scim.example.com.evil.net/v2", False),
        ("https://scim.example.com:8443/v2", False),
        ("http://scim.example.com/v2", False),
        ("https://user@scim.example.com/v2", False),
        ("https://scim.example.com/v2/../admin", False),
        ("https://scim.example.com/v2/%2e%2e/admin", False),
        ("https://scim.example.com\\@evil.net/v2", False),
        ("https://other.example.com/v2", False),
        ("not a url", False),
    ],
)
def test_allow_list_matches_origin_and_path_segments(url: str, allowed: bool) -> None:
    assert url_allowed(url, ["https://scim.example.com/v2"]) is allowed


# -- The serve command ---------------------------------------------------------------


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="elimity-connector")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_command(commands)
    return parser.parse_args(["serve", "scim", *argv])


def test_serve_flags_and_environment_make_the_config(
    tmp_path: Path, keys: Keys
) -> None:
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"pageSize": 25}))
    args = serve_args(
        "--config",
        str(settings_file),
        "--set",
        "concurrency=2",
        "--jwt-public-key",
        str(keys.public_pem),
        "--jwt-source-id",
        SOURCE_ID,
        "--jwt-audience",
        "gateway",
        "--jwt-audience",
        "gateway-2",
    )
    environ = {
        "ELIMITY_SCIM_RETRY_ATTEMPTS": "2",
        "ELIMITY_GATEWAY_JWT_BASE_URL": INSIGHTS_URL,
        "ELIMITY_GATEWAY_JWT_GATEWAY_URL": GATEWAY_URL,
        "ELIMITY_GATEWAY_ALLOW_BASE_URLS": "https://a.example/v2, https://b.example",
        "ELIMITY_ALLOW_EMPTY": "true",
    }

    made = gateway_config(args, environ, MANIFEST)

    assert made.settings["pageSize"] == 25
    assert made.settings["concurrency"] == 2
    assert made.settings["retryAttempts"] == 2
    assert "baseUrl" not in made.settings
    assert made.jwt == JwtSettings(
        source_id=SOURCE_ID,
        base_url=INSIGHTS_URL,
        gateway_url=GATEWAY_URL,
        public_key_file=keys.public_pem,
        audiences=("gateway", "gateway-2"),
    )
    assert made.allowed_base_urls == ("https://a.example/v2", "https://b.example")
    assert made.allow_empty is True


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, "exactly one of --jwt-jwks-url"),
        (["--jwt-jwks-url", "https://x/jwks", "--jwt-public-key", "k.pem"], {}, ""),
        (["--jwt-jwks-url", "file:///etc/jwks.json"], {}, "JWKS URL must be https"),
        (["--jwt-jwks-url", "https://x/jwks"], {}, "expected source_id claim"),
        (["--no-auth"], {}, "--no-auth needs --allow-base-url"),
        (["--no-auth", "--allow-base-url", "https://u@x/v2"], {}, "without user info"),
        (["--no-auth", "--set", "pageSize=0"], {}, "Page size is 0"),
        (["--no-auth"], {"ELIMITY_SCIM_PASSWORD": "pw"}, "unset ELIMITY_SCIM_PASSWORD"),
        ([], {"ELIMITY_GATEWAY_NO_AUTH": "maybe"}, "true or false"),
    ],
)
def test_serve_refuses_an_unsafe_or_invalid_config(
    argv: list[str], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected or "exactly one"):
        gateway_config(serve_args(*argv), environ, MANIFEST)


def test_serve_without_the_extra_fails_with_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    args = serve_args("--no-auth", "--allow-base-url", "https://x/v2")

    with pytest.raises(ConfigurationError) as caught:
        serve_command(args, RedactingFormatter("%(message)s"))

    assert caught.value.exit_code == 2
    assert "pip install 'elimity-scim[gateway]'" in str(caught.value)
    assert "\n" not in str(caught.value)


# -- Conversion and streaming ---------------------------------------------------------


def test_values_become_protocol_values_in_utc() -> None:
    moment = value_message(DateTimeValue(DateTime(2024, 2, 29, 23, 59, 58)))
    assert moment.WhichOneof("value") == "date_time"
    assert moment.date_time.ToJsonString() == "2024-02-29T23:59:58Z"
    day = value_message(DateValue(2024, 3, 1))
    assert day.date.ToJsonString() == "2024-03-01T00:00:00Z"
    clock = value_message(TimeValue(7, 8, 9))
    assert clock.time.ToJsonString() == "0001-01-01T07:08:09Z"
    false = value_message(BooleanValue(False))
    assert false.WhichOneof("value") == "boolean"
    assert false.boolean is False
    empty = value_message(StringValue(""))
    assert empty.WhichOneof("value") == "string"
    zero = value_message(NumberValue(0))
    assert zero.WhichOneof("value") == "number"
    assert zero.number == 0.0


def test_items_are_streamed_as_read_with_a_bound() -> None:
    produced: list[int] = []
    first_taken = threading.Event()
    closed = threading.Event()

    def produce() -> Generator[int, None, None]:
        try:
            for n in range(1000):
                if n == 1:
                    # Blocks until the consumer holds item 0: nothing is buffered.
                    assert first_taken.wait(5)
                produced.append(n)
                yield n
        finally:
            closed.set()

    async def consume() -> list[int]:
        taken: list[int] = []
        stream = iterate_in_thread(produce, bound=4)
        async for n in stream:
            taken.append(n)
            first_taken.set()
            if n == 2:
                await asyncio.sleep(0.3)
                # The reader ran ahead by at most the bound (plus the one in hand).
                assert len(produced) <= len(taken) + 4 + 1
            if n == 5:
                break
        await stream.aclose()
        return taken

    assert asyncio.run(consume()) == [0, 1, 2, 3, 4, 5]
    assert closed.wait(5), "closing the stream closes the reading generator"
    assert len(produced) < 1000


def test_a_reading_error_reaches_the_consumer() -> None:
    def produce() -> Generator[int, None, None]:
        yield 1
        msg = "boom"
        raise ValueError(msg)

    async def consume() -> list[int]:
        taken = []
        async for n in iterate_in_thread(produce, bound=2):
            taken.append(n)
        return taken

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(consume())
