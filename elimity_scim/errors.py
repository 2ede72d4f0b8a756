"""Errors raised while reading a SCIM service provider."""

from __future__ import annotations

import json
import re

import requests

from elimity_scim.connector.errors import SourceAuthError, SourceError
from elimity_scim.connector.http import without_query

_MAX_DETAIL = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ScimConnectorError(SourceError):
    """Base class for every error the SCIM source raises itself."""


class ScimRequestError(ScimConnectorError):
    """A SCIM server could not be reached, or answered with an error status."""

    def __init__(
        self, url: str, status: int | None, detail: str | None, *, hint: str = ""
    ) -> None:
        self.url = without_query(url)
        self.status = status
        self.detail = detail
        outcome = f"status {status}" if status is not None else "no response"
        message = f"SCIM request to {self.url} failed with {outcome}"
        if hint:
            message = f"{message} ({hint})"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)

    @classmethod
    def from_response(
        cls,
        response: requests.Response,
        body: bytes | bytearray,
        *,
        hint: str = "",
        secrets: tuple[str, ...] = (),
    ) -> ScimRequestError:
        """Build the error from a failed response, keeping the server's reason.

        ``secrets`` are masked in the reason: some servers echo the credentials.
        """
        status = response.status_code
        detail = error_detail(body, response.headers.get("Content-Type", ""))
        for secret in secrets:
            if detail and secret:
                detail = detail.replace(secret, "[redacted]")
        error_class = ScimAuthError if status in (401, 403) else cls
        if status == 401 and not hint:
            hint = "authentication failed: check the username and password or token"
        elif status == 403 and not hint:
            hint = "authorization failed: the credentials lack the rights to read"
        return error_class(response.url, status, detail, hint=hint)


class ScimAuthError(ScimRequestError, SourceAuthError):
    """The SCIM server refused the credentials (401) or the access (403)."""


class ScimPayloadError(ScimConnectorError):
    """A SCIM response did not have the shape RFC 7644 prescribes."""


class ScimPagingError(ScimConnectorError):
    """A listing cannot be read completely, e.g. because paging is broken."""


def error_detail(body: bytes | bytearray, content_type: str) -> str | None:
    """Return one readable line of reason from an error body of any common shape."""
    text = body[:65536].decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        parsed: object = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if parsed is not None:
        found = _reason(parsed, depth=0)
        if found:
            return _one_line(found)
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        return "the server answered with an HTML page"
    return _one_line(text)


def _reason(value: object, depth: int) -> str | None:
    # RFC 7644 §3.12 puts the reason in "detail"; other servers use "message",
    # "error_description" or "error", sometimes one object level down.
    if depth > 3:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, list):
        reasons = [_reason(item, depth + 1) for item in value[:3]]
        return "; ".join(r for r in reasons if r) or None
    if not isinstance(value, dict):
        return None
    lowered = {str(k).lower(): v for k, v in value.items()}
    for key in (
        "detail",
        "message",
        "error_description",
        "description",
        "error",
        "errors",
        "title",
    ):
        found = _reason(lowered.get(key), depth + 1)
        if found:
            return found
    return None


def _one_line(text: str) -> str:
    # Control characters (terminal escape sequences among them) never reach the
    # operator's terminal or Insights.
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"
