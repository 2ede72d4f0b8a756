"""The gateway as a real process: uvicorn on a 127.0.0.1 socket, and run's twin."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from connectrpc.code import Code
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from elimity.insights.customgateway.v1alpha2.customgateway_connect import (
    ServiceClient,
)

from elimity_scim.connector.gateway import create_app, listen, make_server
from elimity_scim.source import ScimSource
from tests.conftest import BEARER_TOKEN
from tests.support.directory import SeededDirectory
from tests.support.fake_insights import summarize
from tests.support.scim2 import Scim2Server
from tests.test_end_to_end import run
from tests.test_gateway import (
    GATEWAY_URL,
    INSIGHTS_URL,
    SOURCE_ID,
    VERSION,
    Imported,
    Keys,
    assert_matches_directory,
    config,
    drive,
    drive_async,
    jwt_settings,
    make_keys,
    mint,
    scim_fields,
)

# Runs `elimity-connector serve ...` the way cli.main runs a subcommand, until the
# lead wires `serve` into the console script.
LAUNCHER = """
import argparse, logging, sys
from elimity_scim.connector.errors import ConnectorError
from elimity_scim.connector.gateway import add_serve_command
from elimity_scim.connector.logs import RedactingFormatter

parser = argparse.ArgumentParser(prog="elimity-connector")
add_serve_command(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
handler = logging.StreamHandler(sys.stderr)
formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s")
handler.setFormatter(formatter)
logging.basicConfig(level="INFO", handlers=[handler])
try:
    sys.exit(args.handler(args, formatter))
except ConnectorError as exc:
    logging.getLogger("elimity-connector").error("%s", exc)
    sys.exit(int(exc.exit_code))
"""
# What a base install without the gateway extra looks like to Python.
WITHOUT_EXTRA = """
import sys
for name in ("elimity", "elimity_insights_sdk", "connectrpc", "uvicorn", "jwt"):
    sys.modules[name] = None
import elimity_scim.connector.cli, elimity_scim.connector.gateway
"""
SERVING = re.compile(r"custom gateway on (http://127\.0\.0\.1:\d+)")
ROOT = Path(__file__).parents[1]


@dataclass
class Gateway:
    process: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def clean_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("jwt"))


@pytest.fixture
def gateway(keys: Keys) -> Iterator[Gateway]:
    """``serve scim`` on a free port of 127.0.0.1, checking tokens from a PEM key."""
    env = clean_env(
        ELIMITY_SCIM_PAGE_SIZE="13",
        ELIMITY_GATEWAY_JWT_SOURCE_ID=SOURCE_ID,
        ELIMITY_GATEWAY_JWT_BASE_URL=INSIGHTS_URL,
        ELIMITY_GATEWAY_JWT_GATEWAY_URL=GATEWAY_URL,
    )
    argv = ["serve", "scim", "--port", "0", "--jwt-public-key", str(keys.public_pem)]
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = Gateway(process)
    ready = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            started.lines.append(line)
            match = SERVING.search(line)
            if match:
                started.url = match.group(1)
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "the gateway did not start"
        assert started.url, started.stderr
        yield started
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(10)


def test_serve_over_a_real_socket(
    gateway: Gateway,
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    keys: Keys,
) -> None:
    server, seeded = scim2_server_bearer
    token = mint(keys.private)

    async def main() -> tuple[Imported, Imported, httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as session:
            client = ServiceClient(gateway.url, session=session)
            good = await drive_async(client, scim_fields(server), token=token)
            anonymous = await drive_async(client, scim_fields(server))
            # The Connect JSON codec on the wire, as curl would send it.
            raw = await session.post(
                f"{gateway.url}/elimity.insights.customgateway.v1alpha2.Service/Meta",
                content=b"{}",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {token}",
                },
            )
            return good, anonymous, raw

    good, anonymous, raw = asyncio.run(main())

    assert good.error is None, good.error
    assert_matches_directory(good.summary(), seeded)
    assert good.logs[-1][0] == "info"
    assert anonymous.error is not None
    assert anonymous.error.code == Code.UNAUTHENTICATED
    assert raw.status_code == 200
    assert raw.json() == {"initialCursor": "full", "version": VERSION}
    assert gateway.process.poll() is None
    assert "Import complete" in gateway.stderr
    assert "Refused a call: missing bearer token" in gateway.stderr
    assert BEARER_TOKEN not in gateway.stderr
    assert token not in gateway.stderr


def test_serve_without_the_extra_exits_2_with_a_hint() -> None:
    argv = ["serve", "scim", "--no-auth", "--allow-base-url", "https://x.example/v2"]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA + LAUNCHER, *argv],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "pip install 'elimity-scim[gateway]'" in line


def test_gateway_and_run_output_give_the_same_snapshot(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    keys: Keys,
    tmp_path: Path,
) -> None:
    server, seeded = scim2_server_bearer
    output = tmp_path / "snapshot.json"
    env = {
        "ELIMITY_SCIM_BASE_URL": server.base_url,
        "ELIMITY_SCIM_PASSWORD": BEARER_TOKEN,
        "ELIMITY_SCIM_PAGE_SIZE": "11",
    }
    result = run("run", "scim", "--output", str(output), env=env)
    assert result.returncode == 0, result.stderr
    pushed = json.loads(output.read_text())
    app = create_app(ScimSource(), config(jwt_settings(keys), page_size="17"))

    served = drive(app, scim_fields(server), token=mint(keys.private))

    assert served.error is None
    assert normalized(served.snapshot()) == normalized(pushed)
    assert served.summary() == summarize(pushed)
    assert_matches_directory(served.summary(), seeded)


def normalized(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Entities by (type, id) and relationship triples, with attributes as maps."""

    def attributes(record: Mapping[str, Any]) -> dict[str, Any]:
        return {
            a["attributeTypeId"]: (a["value"]["type"], a["value"]["value"])
            for a in record["attributeAssignments"]
        }

    entities = {
        (e["type"], e["id"]): (e["name"], attributes(e)) for e in snapshot["entities"]
    }
    relationships = {
        (r["fromEntityType"], r["fromEntityId"], r["toEntityType"], r["toEntityId"]): (
            attributes(r)
        )
        for r in snapshot["relationships"]
    }
    assert len(entities) == len(snapshot["entities"])
    assert len(relationships) == len(snapshot["relationships"])
    return {"entities": entities, "relationships": relationships}


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, valid for an hour, and its key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_serve_https_with_uvicorn_in_a_thread(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    keys: Keys,
    tmp_path: Path,
) -> None:
    server, seeded = scim2_server_bearer
    cert, key = self_signed(tmp_path)
    app = create_app(ScimSource(), config(jwt_settings(keys)))
    uvicorn_server = make_server(app, tls=(cert, key))
    listener = listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    thread = threading.Thread(
        target=uvicorn_server.run, kwargs={"sockets": [listener]}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not uvicorn_server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert uvicorn_server.started

        async def main() -> Imported:
            trust = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(verify=trust, timeout=60) as session:
                client = ServiceClient(f"https://127.0.0.1:{port}", session=session)
                return await drive_async(
                    client, scim_fields(server), token=mint(keys.private)
                )

        result = asyncio.run(main())
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)
        listener.close()

    assert result.error is None, result.error
    assert_matches_directory(result.summary(), seeded)
    assert not thread.is_alive()
