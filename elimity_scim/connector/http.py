"""Small HTTP helpers shared by the runner and HTTP-based sources."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import requests

_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def transport_reason(exc: BaseException) -> str:
    """Return a short, secret-free reason for a failed HTTP exchange."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "the server did not answer in time (read timeout)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake or certificate check failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the response was cut short"
    text = str(exc)
    if "ConnectTimeoutError" in text or "Connect timeout" in text:
        return "connecting timed out"
    if "Read timed out" in text or "ReadTimeoutError" in text:
        return "the server did not answer in time (read timeout)"
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "the server closed the connection without answering"
    if "IncompleteRead" in text or "ProtocolError" in text:
        return "the response was cut short"
    match = _ERRNO.search(text)
    if match:
        return match.group(1).strip().lower()
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    return type(exc).__name__


def without_query(url: str) -> str:
    """Return a URL without its query string, fragment and any user info."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def is_loopback(url: str) -> bool:
    """Tell whether a URL's host is this machine (127.0.0.0/8, ::1, localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
