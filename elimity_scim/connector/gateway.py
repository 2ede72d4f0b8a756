"""Pull mode: serve a source as an Elimity Insights custom gateway.

Insights calls the gateway over Connect (``elimity.insights.customgateway.v1alpha2``):
``Meta`` first, then ``PerformImport`` with the source's configuration values as
``fields``. Those fields are the manifest's options; the settings come from the
gateway's own ``--config``, environment and ``--set``, as for ``run``.

This module only needs the base install. The ``gateway`` extra
(``elimity-insights-sdk``, ``uvicorn``, ``PyJWT[crypto]``) is imported when the
gateway is built, so that ``serve`` without it fails with a hint instead of
breaking every other command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from elimity_scim.connector.arguments import add_source_arguments, env_flag
from elimity_scim.connector.config import (
    coerce,
    env_name,
    option_specs,
    resolve,
    secret_values,
)
from elimity_scim.connector.contract import Source, load_source
from elimity_scim.connector.errors import ConfigurationError, ExitCode
from elimity_scim.connector.http import is_loopback
from elimity_scim.connector.logs import RedactingFormatter

if TYPE_CHECKING:
    import uvicorn
    from elimity.insights.customgateway.v1alpha2.customgateway_connect import (
        ServiceASGIApplication,
    )

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_ISSUER = "https://auth.elimity.com/"
DEFAULT_AUDIENCES = ("gateway",)
EXTRA_HINT = "pip install 'elimity-scim[gateway]'"
# The modules of the gateway extra, imported only when serving.
EXTRA_MODULES = (
    "elimity_insights_sdk",
    "elimity.insights.customgateway.v1alpha2.customgateway_connect",
    "connectrpc",
    "uvicorn",
    "jwt",
    "cryptography",
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_GRACEFUL_SHUTDOWN_SECONDS = 10


@dataclass(frozen=True)
class JwtSettings:
    """How the bearer JWT of each call from Insights is checked (RS256)."""

    source_id: str
    """Expected ``source_id`` claim: the numeric id of the source in Insights."""
    base_url: str
    """Expected ``base_url`` claim: the Insights URL, e.g. https://x.elimity.com."""
    gateway_url: str
    """Expected ``gateway_url`` claim: the URL Insights calls this gateway at."""
    jwks_url: str | None = None
    """Where the issuer's signing keys are published (JWKS), or None."""
    public_key_file: Path | None = None
    """A PEM file with the RSA public key, instead of ``jwks_url``."""
    issuer: str = DEFAULT_ISSUER
    audiences: tuple[str, ...] = DEFAULT_AUDIENCES


@dataclass(frozen=True)
class GatewayConfig:
    """What the gateway accepts from its callers, beside the source's settings."""

    settings: Mapping[str, object]
    """The source's settings, resolved as for ``run`` (no options)."""
    jwt: JwtSettings | None
    """Token checks; None only when authentication was turned off on purpose."""
    allowed_base_urls: tuple[str, ...] = ()
    """URL prefixes that URL fields must match; empty allows any (auth only)."""
    allow_empty: bool = False
    """Accept a reading without any entity of the first type (users)."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Secret setting values, to keep out of log items and errors."""


# -- The serve command --------------------------------------------------------


def add_serve_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``serve SOURCE`` with its flags to the runner's subcommands."""
    serve: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="serve a source as an Elimity Insights custom gateway (pull mode)",
        description="Serve a source as an Elimity Insights custom gateway: Insights "
        "calls it to import, sending the source's options as configuration fields.",
    )
    add_source_arguments(
        serve, config_help="JSON file with setting values (no options)"
    )
    serve.add_argument(
        "--host",
        help=f"address to listen on (env ELIMITY_GATEWAY_HOST; default {DEFAULT_HOST})",
    )
    serve.add_argument(
        "--port",
        type=int,
        help=f"port to listen on, 0 for any free one (env ELIMITY_GATEWAY_PORT; "
        f"default {DEFAULT_PORT})",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        help="PEM certificate (chain) to serve HTTPS with "
        "(env ELIMITY_GATEWAY_TLS_CERT)",
    )
    serve.add_argument(
        "--tls-key",
        type=Path,
        help="PEM private key of --tls-cert (env ELIMITY_GATEWAY_TLS_KEY)",
    )
    auth = serve.add_argument_group(
        "authentication of Insights' calls (bearer JWT, RS256)"
    )
    auth.add_argument(
        "--jwt-jwks-url",
        metavar="URL",
        help="JWKS URL of the token issuer (env ELIMITY_GATEWAY_JWT_JWKS_URL)",
    )
    auth.add_argument(
        "--jwt-public-key",
        type=Path,
        metavar="FILE",
        help="PEM file with the issuer's RSA public key, instead of a JWKS URL "
        "(env ELIMITY_GATEWAY_JWT_PUBLIC_KEY_FILE)",
    )
    auth.add_argument(
        "--jwt-issuer",
        help=f"expected iss claim (env ELIMITY_GATEWAY_JWT_ISSUER; default "
        f"{DEFAULT_ISSUER})",
    )
    auth.add_argument(
        "--jwt-audience",
        action="append",
        metavar="AUDIENCE",
        help="accepted aud claim; repeatable (env ELIMITY_GATEWAY_JWT_AUDIENCES, "
        "comma-separated; default gateway)",
    )
    auth.add_argument(
        "--jwt-source-id",
        metavar="ID",
        help="expected source_id claim: the source's id in Insights "
        "(env ELIMITY_GATEWAY_JWT_SOURCE_ID; required with authentication)",
    )
    auth.add_argument(
        "--jwt-base-url",
        metavar="URL",
        help="expected base_url claim: the Insights URL "
        "(env ELIMITY_GATEWAY_JWT_BASE_URL; required with authentication)",
    )
    auth.add_argument(
        "--jwt-gateway-url",
        metavar="URL",
        help="expected gateway_url claim: this gateway's URL as configured in "
        "Insights (env ELIMITY_GATEWAY_JWT_GATEWAY_URL; required with "
        "authentication)",
    )
    auth.add_argument(
        "--no-auth",
        action="store_true",
        help="accept calls without a token; needs --allow-base-url "
        "(env ELIMITY_GATEWAY_NO_AUTH=true)",
    )
    serve.add_argument(
        "--allow-base-url",
        action="append",
        metavar="PREFIX",
        help="only import from URLs under this prefix, e.g. "
        "https://api.slack.com/scim/v2; repeatable (env "
        "ELIMITY_GATEWAY_ALLOW_BASE_URLS, space- or comma-separated)",
    )
    serve.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept a reading without any entity of the first type (users) "
        "(env ELIMITY_ALLOW_EMPTY=true)",
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace, formatter: RedactingFormatter) -> int:
    """Serve the source named on the command line until interrupted."""
    require_extra()
    environ = os.environ
    if getattr(args, "log_level", None):
        logging.getLogger().setLevel(args.log_level)
    source = load_source(args.source)
    manifest = source.manifest()
    config = gateway_config(args, environ, manifest)
    formatter.add_secrets(config.secrets)
    host = args.host or environ.get("ELIMITY_GATEWAY_HOST") or DEFAULT_HOST
    port = _port(args.port, environ.get("ELIMITY_GATEWAY_PORT"))
    tls = _tls(args, environ)
    app = create_app(source, config, formatter)
    server = make_server(app, tls=tls)
    listener = listen(host, port)
    bound = listener.getsockname()
    scheme = "https" if tls else "http"
    if not tls and not is_loopback(f"http://{_url_host(host)}/"):
        logger.warning(
            "Serving plain HTTP on %s: the fields Insights sends (the source's "
            "credentials) and its tokens would cross the network unencrypted; use "
            "--tls-cert/--tls-key or a TLS-terminating proxy",
            host,
        )
    logger.info(
        "Serving source %s as an Insights custom gateway on %s://%s:%d",
        args.source,
        scheme,
        _url_host(str(bound[0])),
        bound[1],
    )
    server.run(sockets=[listener])
    return ExitCode.OK


def require_extra() -> None:
    """Fail with a one-line hint when the ``gateway`` extra is not installed."""
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            msg = f"serve needs the gateway extra ({name} is missing): {EXTRA_HINT}"
            raise ConfigurationError(msg) from exc


def gateway_config(
    args: argparse.Namespace, environ: Mapping[str, str], manifest: Mapping[str, object]
) -> GatewayConfig:
    """Read the settings, token checks and allow-list from flags and environment."""
    settings = serve_settings(
        manifest, config_file=args.config, environ=environ, overrides=args.set
    )
    allowed = tuple(
        args.allow_base_url
        or environ.get("ELIMITY_GATEWAY_ALLOW_BASE_URLS", "").replace(",", " ").split()
    )
    for prefix in allowed:
        _check_prefix(prefix)
    no_auth = args.no_auth or env_flag(environ, "ELIMITY_GATEWAY_NO_AUTH")
    jwt = None if no_auth else _jwt_settings(args, environ)
    if jwt is None:
        if not allowed:
            msg = (
                "--no-auth needs --allow-base-url PREFIX (or "
                "ELIMITY_GATEWAY_ALLOW_BASE_URLS): without authentication, anyone "
                "who reaches the gateway could make it fetch any URL"
            )
            raise ConfigurationError(msg)
        logger.warning(
            "Authentication is OFF (--no-auth): any caller that reaches the gateway "
            "can import from %s",
            ", ".join(allowed),
        )
    return GatewayConfig(
        settings=settings,
        jwt=jwt,
        allowed_base_urls=allowed,
        allow_empty=args.allow_empty or env_flag(environ, "ELIMITY_ALLOW_EMPTY"),
        secrets=tuple(secret_values(manifest, settings)),
    )


def serve_settings(
    manifest: Mapping[str, object],
    *,
    config_file: Path | None,
    environ: Mapping[str, str],
    overrides: Sequence[str] = (),
) -> dict[str, object]:
    """Resolve a source's settings as ``run`` does; its options come from Insights.

    An option in the environment is refused rather than ignored: mixed with the
    fields of a call, an operator's password could be sent to the base URL that
    a caller names.
    """
    source = str(manifest.get("id", ""))
    options = [spec for spec in option_specs(manifest) if not spec.is_setting]
    present = [
        name
        for spec in options
        for name in (env_name(source, spec.key), env_name(source, spec.key) + "_FILE")
        if environ.get(name)
    ]
    if present:
        msg = (
            "serve takes the options from the fields Insights sends, not from the "
            f"environment: unset {', '.join(present)}"
        )
        raise ConfigurationError(msg)
    settings_only = {**manifest, "configuration": []}
    return resolve(
        settings_only, config_file=config_file, environ=environ, overrides=overrides
    )


def resolve_fields(
    manifest: Mapping[str, object],
    fields: Mapping[str, object],
    settings: Mapping[str, object],
) -> dict[str, object]:
    """Return the options from a call's fields plus the settings, as ``run`` would.

    Each field is validated exactly like the same key in ``run``'s config file; a
    field that is not an option (a setting such as ``pageSize``, or a typo) is
    refused.
    """
    source = str(manifest.get("id", ""))
    specs = [spec for spec in option_specs(manifest) if not spec.is_setting]
    unknown = sorted(set(fields) - {spec.key for spec in specs})
    if unknown:
        keys = ", ".join(spec.key for spec in specs)
        msg = (
            f"field(s) {', '.join(unknown)} are not options of source {source!r} "
            f"(its options: {keys}); settings are configured on the gateway"
        )
        raise ConfigurationError(msg)
    values = dict(settings)
    for spec in specs:
        if spec.type == "file" and spec.key in fields:
            msg = f"field {spec.key!r}: file options cannot come from Insights"
            raise ConfigurationError(msg)
        value = None
        if spec.key in fields:
            value = coerce(spec, fields[spec.key], f"field {spec.key!r}")
        if value is None:
            if not spec.optional:
                msg = (
                    f"missing required field {spec.name} ({spec.key}): add it to the "
                    "source's gateway configuration in Insights"
                )
                raise ConfigurationError(msg)
            value = spec.default
        values[spec.key] = value
    return values


def field_secrets(
    manifest: Mapping[str, object], fields: Mapping[str, object]
) -> list[str]:
    """Return the values of the secret options among a call's fields."""
    secret_keys = {spec.key for spec in option_specs(manifest) if spec.secret}
    return [
        value
        for key, value in fields.items()
        if key in secret_keys and isinstance(value, str) and value
    ]


def check_urls(
    manifest: Mapping[str, object],
    options: Mapping[str, object],
    allowed: Sequence[str],
) -> None:
    """Refuse URL options outside the allow-list, or plain http:// elsewhere.

    Every non-secret string option whose value holds ``://`` counts as a URL the
    source will fetch (``baseUrl`` for SCIM). Plain ``http://`` to a host that is
    not loopback needs the ``allowInsecureHttp`` setting, as in ``run``.
    """
    for spec in option_specs(manifest):
        value = options.get(spec.key)
        if spec.is_setting or spec.type != "string" or not isinstance(value, str):
            continue
        if "://" not in value:
            continue
        if allowed and not url_allowed(value, allowed):
            msg = f"{spec.name} {value} is not under an allowed prefix of this gateway"
            raise UrlRefusedError(msg)
        insecure = options.get("allowInsecureHttp") is True
        plain = urlsplit(value).scheme.lower() == "http"
        if plain and not is_loopback(value) and not insecure:
            msg = (
                f"{spec.name} {value} is plain http:// to another host: the "
                "credentials would cross the network unencrypted; use https:// or "
                "set allowInsecureHttp on the gateway"
            )
            raise ConfigurationError(msg)


class UrlRefusedError(ConfigurationError):
    """A caller named a URL that the gateway's allow-list does not cover."""


def url_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Tell whether a URL lies under one of the prefixes.

    Scheme, host and port must be equal and the path must continue the prefix's
    path at a ``/`` boundary, so ``https://scim.example.com`` does not admit
    ``https://scim.example.com.evil.net``. URLs with user info, backslashes or
    ``.``/``..`` segments are never allowed.
    """
    target = _origin_and_path(url)
    if target is None:
        return False
    origin, path = target
    for prefix in prefixes:
        allowed = _origin_and_path(prefix)
        if allowed is None or allowed[0] != origin:
            continue
        base = allowed[1].rstrip("/")
        if path == base or path.startswith(base + "/"):
            return True
    return False


def gateway_version(manifest: Mapping[str, object]) -> str:
    """Return the version the gateway announces: ``<source id>-<version>``."""
    return f"{manifest.get('id', '')}-{manifest.get('version', '')}"


# -- Building and serving the application ---------------------------------------


def create_app(
    source: Source,
    config: GatewayConfig,
    formatter: RedactingFormatter | None = None,
) -> ServiceASGIApplication:
    """Build the Connect ASGI application of the gateway for one source.

    ``formatter`` is the process's log formatter; the secrets of each call are
    added to it so that log lines stay clean too.
    """
    require_extra()
    from elimity_scim.connector._gateway_service import build_application

    redactor = formatter or RedactingFormatter("%(message)s")
    redactor.add_secrets(config.secrets)
    return build_application(source, config, redactor)


def listen(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket, or fail with a configuration error."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise ConfigurationError(msg) from exc


def make_server(
    app: ServiceASGIApplication, *, tls: tuple[Path, Path] | None = None
) -> uvicorn.Server:
    """Return a uvicorn server for the app; run it with ``run(sockets=[...])``."""
    import uvicorn

    config = uvicorn.Config(
        app,
        lifespan="off",  # the Connect app answers HTTP only
        log_config=None,  # keep the runner's redacting log handler
        server_header=False,
        # On SIGTERM, imports still streaming end in an error after this long.
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    try:
        config.load()  # reads the TLS files now, not on the first request
    except OSError as exc:  # ssl.SSLError included
        msg = f"cannot load the TLS certificate or key: {exc}"
        raise ConfigurationError(msg) from exc
    return uvicorn.Server(config)


# -- Helpers ----------------------------------------------------------------------


def _jwt_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> JwtSettings:
    jwks_url = args.jwt_jwks_url or environ.get("ELIMITY_GATEWAY_JWT_JWKS_URL")
    key_file = args.jwt_public_key or environ.get("ELIMITY_GATEWAY_JWT_PUBLIC_KEY_FILE")
    if bool(jwks_url) == bool(key_file):
        msg = (
            "authentication needs exactly one of --jwt-jwks-url "
            "(ELIMITY_GATEWAY_JWT_JWKS_URL) and --jwt-public-key "
            "(ELIMITY_GATEWAY_JWT_PUBLIC_KEY_FILE); pass --no-auth to serve "
            "without authentication"
        )
        raise ConfigurationError(msg)
    if jwks_url:
        parts = urlsplit(jwks_url)
        secure = parts.scheme == "https" or (
            parts.scheme == "http" and is_loopback(jwks_url)
        )
        if not secure or not parts.hostname:
            msg = f"the JWKS URL must be https:// (or http:// to loopback): {jwks_url}"
            raise ConfigurationError(msg)
    expected: dict[str, str] = {}
    for claim, flag in (
        ("source_id", "jwt_source_id"),
        ("base_url", "jwt_base_url"),
        ("gateway_url", "jwt_gateway_url"),
    ):
        variable = f"ELIMITY_GATEWAY_JWT_{claim.upper()}"
        value = getattr(args, flag) or environ.get(variable, "")
        if not value.strip():
            option = "--" + flag.replace("_", "-")
            msg = (
                f"authentication needs the expected {claim} claim: set {option} or "
                f"{variable} (or pass --no-auth)"
            )
            raise ConfigurationError(msg)
        expected[claim] = value.strip()
    audiences = tuple(
        args.jwt_audience
        or [
            a.strip()
            for a in environ.get("ELIMITY_GATEWAY_JWT_AUDIENCES", "").split(",")
            if a.strip()
        ]
        or DEFAULT_AUDIENCES
    )
    issuer = (
        args.jwt_issuer or environ.get("ELIMITY_GATEWAY_JWT_ISSUER") or DEFAULT_ISSUER
    )
    return JwtSettings(
        source_id=expected["source_id"],
        base_url=expected["base_url"],
        gateway_url=expected["gateway_url"],
        jwks_url=jwks_url or None,
        public_key_file=Path(key_file) if key_file else None,
        issuer=issuer,
        audiences=audiences,
    )


def _check_prefix(prefix: str) -> None:
    parts = urlsplit(prefix)
    if (
        parts.scheme.lower() not in _DEFAULT_PORTS
        or not parts.hostname
        or _origin_and_path(prefix) is None
        or parts.query
        or parts.fragment
    ):
        msg = (
            "--allow-base-url takes http(s)://host[:port][/path] without user info, "
            f"query or dot segments: {prefix}"
        )
        raise ConfigurationError(msg)


def _origin_and_path(url: str) -> tuple[tuple[str, str, int], str] | None:
    if "\\" in url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    segments = unquote(parts.path).split("/")
    if "." in segments or ".." in segments:
        return None
    return (scheme, parts.hostname.lower().rstrip("."), port), parts.path or "/"


def _port(flag: int | None, variable: str | None) -> int:
    raw: object = flag if flag is not None else (variable or DEFAULT_PORT)
    try:
        port = int(str(raw))
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        msg = f"the port must be 0 to 65535, not {raw!r}"
        raise ConfigurationError(msg)
    return port


def _tls(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[Path, Path] | None:
    cert = args.tls_cert or environ.get("ELIMITY_GATEWAY_TLS_CERT")
    key = args.tls_key or environ.get("ELIMITY_GATEWAY_TLS_KEY")
    if not cert and not key:
        return None
    if not cert or not key:
        msg = "--tls-cert and --tls-key go together: set both or neither"
        raise ConfigurationError(msg)
    for path in (cert, key):
        if not Path(path).is_file():
            msg = f"no readable TLS file: {path}"
            raise ConfigurationError(msg)
    return Path(cert), Path(key)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
