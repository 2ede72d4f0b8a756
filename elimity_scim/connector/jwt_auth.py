"""Check the bearer JWT that Elimity Insights sends with each call to a gateway.

Insights obtains an RS256 access token by OAuth2 client credentials and sends it as
``Authorization: Bearer <jwt>``. Besides signature, expiry, issuer and audience,
its custom claims ``source_id``, ``base_url`` and ``gateway_url`` must equal the
values this gateway was configured with: the issuer signs tokens for every
Insights tenant, so without them any tenant could import through this gateway.

Needs the ``gateway`` extra (PyJWT with cryptography).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from elimity_scim.connector.errors import ConfigurationError

if TYPE_CHECKING:
    from elimity_scim.connector.gateway import JwtSettings

_ALGORITHMS = ["RS256"]
# Clock skew tolerated between the issuer and this machine.
_LEEWAY_SECONDS = 30
_JWKS_TIMEOUT_SECONDS = 10
_REQUIRED_CLAIMS = ["exp", "iss", "aud"]


class TokenRejectedError(Exception):
    """The caller sent no bearer token, or one that does not pass the checks."""


class KeysUnavailableError(Exception):
    """The issuer's signing keys could not be fetched, so no token can be checked."""


class JwtVerifier:
    """Checks bearer tokens against configured keys and expected claims."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._key: RSAPublicKey | None = None
        self._jwks: jwt.PyJWKClient | None = None
        if settings.public_key_file is not None:
            self._key = _load_public_key(settings.public_key_file)
        elif settings.jwks_url is not None:
            # Keys are cached; an unknown key id refetches at most every 30 s.
            self._jwks = jwt.PyJWKClient(
                settings.jwks_url, cache_keys=True, timeout=_JWKS_TIMEOUT_SECONDS
            )
        else:
            msg = "token checks need a JWKS URL or a public key file"
            raise ConfigurationError(msg)

    def verify(self, authorization: str | None) -> dict[str, object]:
        """Return the claims of the bearer token in an Authorization header.

        Blocking: the first call, or a token signed with a new key, fetches the
        JWKS. Raises ``TokenRejectedError`` or ``KeysUnavailableError``.
        """
        token = _bearer(authorization)
        settings = self._settings
        try:
            key = self._signing_key(token)
            claims: dict[str, object] = jwt.decode(
                token,
                key,
                algorithms=_ALGORITHMS,
                audience=list(settings.audiences),
                issuer=settings.issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWKClientConnectionError as exc:
            msg = "cannot fetch the token issuer's signing keys (JWKS)"
            raise KeysUnavailableError(msg) from exc
        except jwt.PyJWTError as exc:
            msg = f"invalid bearer token: {exc}"
            raise TokenRejectedError(msg) from exc
        _expect(claims, "source_id", settings.source_id)
        _expect(claims, "base_url", settings.base_url)
        _expect(claims, "gateway_url", settings.gateway_url)
        return claims

    def _signing_key(self, token: str) -> RSAPublicKey | jwt.PyJWK:
        if self._key is not None:
            return self._key
        if self._jwks is None:
            msg = "no keys configured"
            raise TokenRejectedError(msg)
        return self._jwks.get_signing_key_from_jwt(token)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        msg = "missing bearer token (Authorization header)"
        raise TokenRejectedError(msg)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        msg = "the Authorization header must be Bearer <token>"
        raise TokenRejectedError(msg)
    return token.strip()


def _expect(claims: dict[str, object], claim: str, expected: str) -> None:
    value = claims.get(claim)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a numeric source id is still the same id
    if not isinstance(value, str) or _normal(value) != _normal(expected):
        shown = "missing" if value is None else "not the expected value"
        msg = f"invalid bearer token: claim {claim} is {shown}"
        raise TokenRejectedError(msg)


def _normal(value: str) -> str:
    # URLs as configured in Insights may or may not end with a slash.
    return value.strip().rstrip("/")


def _load_public_key(path: Path) -> RSAPublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the JWT public key file {path}: {exc.strerror}"
        raise ConfigurationError(msg) from exc
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        msg = f"{path} holds no PEM public key"
        raise ConfigurationError(msg) from exc
    if not isinstance(key, RSAPublicKey):
        msg = f"{path} holds no RSA public key (tokens are checked with RS256)"
        raise ConfigurationError(msg)
    return key
