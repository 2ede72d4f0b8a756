"""TLS options against an HTTPS fake on 127.0.0.1, with a CA bundle in the environment.

``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) used to override ``caBundle`` and
``verifyTls``: the connector set them on its session only, which requests lets the
environment win over.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.fake_insights import summarize
from tests.support.fake_scim import group, member, user
from tests.test_end_to_end import run
from tests.test_regressions import Respond, TinyServer, directory, scim_at

TLS_FAILURE = "the TLS handshake or certificate check failed"


@dataclass(frozen=True)
class Pair:
    certificate: Path
    key: Path


def _self_signed(folder: Path, name: str, *, server: bool) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    )
    if server:
        address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(
            x509.SubjectAlternativeName([address]), critical=False
        )
    certificate = builder.sign(key, hashes.SHA256())
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    pair.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pair, Pair]:
    """A server certificate for 127.0.0.1 and a client certificate, self-signed."""
    folder = tmp_path_factory.mktemp("tls")
    return (
        _self_signed(folder, "scim-server", server=True),
        _self_signed(folder, "scim-client", server=False),
    )


def _respond() -> Respond:
    users = [user("u1"), user("u2")]
    groups = [group("g1", [member("u1", "User"), member("u2", "User")])]
    return directory(users, groups)


@pytest.fixture(scope="module")
def https_scim(pairs: tuple[Pair, Pair]) -> Iterator[TinyServer]:
    server_pair, _ = pairs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pair.certificate, server_pair.key)
    with TinyServer(_respond(), context) as server:
        yield server


@pytest.fixture(scope="module")
def mutual_scim(pairs: tuple[Pair, Pair]) -> Iterator[TinyServer]:
    server_pair, client_pair = pairs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pair.certificate, server_pair.key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_pair.certificate)
    with TinyServer(_respond(), context) as server:
        yield server


@pytest.fixture(params=["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def bundle_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a system may carry: a CA bundle that lacks our CA."""
    return {request.param: certifi.where()}


def _users(output: Path) -> set[str]:
    return set(summarize(json.loads(output.read_text())).users)


def test_ca_bundle_wins_over_the_environment(
    https_scim: TinyServer,
    pairs: tuple[Pair, Pair],
    bundle_env: dict[str, str],
    tmp_path: Path,
) -> None:
    server_pair, _ = pairs
    output = tmp_path / "snapshot.json"
    env = {
        **bundle_env,
        **scim_at(https_scim.base_url, caBundle=str(server_pair.certificate)),
    }
    result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 0, result.stderr
    assert _users(output) == {"u1", "u2"}


def test_without_ca_bundle_the_certificate_is_refused(
    https_scim: TinyServer, bundle_env: dict[str, str], tmp_path: Path
) -> None:
    output = tmp_path / "snapshot.json"
    env = {**bundle_env, **scim_at(https_scim.base_url, retryAttempts="1")}
    result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 4, result.stderr
    assert (
        f"SCIM request to {https_scim.base_url}/Users failed with no response: "
        f"{TLS_FAILURE}"
    ) in result.stderr
    assert not output.exists()


def test_verify_tls_false_wins_over_the_environment(
    https_scim: TinyServer, bundle_env: dict[str, str], tmp_path: Path
) -> None:
    output = tmp_path / "snapshot.json"
    env = {**bundle_env, **scim_at(https_scim.base_url, verifyTls="false")}
    result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 0, result.stderr
    assert (
        f"TLS certificate verification is OFF for {https_scim.base_url}"
        in result.stderr
    )
    assert _users(output) == {"u1", "u2"}


@pytest.mark.parametrize("with_certificate", [True, False])
def test_mutual_tls(
    mutual_scim: TinyServer,
    pairs: tuple[Pair, Pair],
    tmp_path: Path,
    with_certificate: bool,
) -> None:
    server_pair, client_pair = pairs
    output = tmp_path / "snapshot.json"
    settings = {"caBundle": str(server_pair.certificate), "retryAttempts": "1"}
    if with_certificate:
        settings["clientCertificate"] = str(client_pair.certificate)
        settings["clientKey"] = str(client_pair.key)
    env = {
        "REQUESTS_CA_BUNDLE": certifi.where(),
        **scim_at(mutual_scim.base_url, **settings),
    }
    result = run("run", "scim", "--output", str(output), env=env)

    if with_certificate:
        assert result.returncode == 0, result.stderr
        assert _users(output) == {"u1", "u2"}
    else:
        assert result.returncode == 4, result.stderr
        assert f"{mutual_scim.base_url}/Users failed with no response" in (
            result.stderr
        )
        assert not output.exists()
