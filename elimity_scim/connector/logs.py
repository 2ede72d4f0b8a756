"""Logging that never shows a secret."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

_MASK = "[redacted]"
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_SHORTEST = 4


class RedactingFormatter(logging.Formatter):
    """A formatter that masks known secret values anywhere in the output."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._secrets: list[str] = []
        self._pattern: re.Pattern[str] | None = None

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on.

        Values shorter than four characters are not masked: they would garble every
        line, and they are no secret worth the name.
        """
        new = {
            form
            for secret in secrets
            if len(secret) >= _SHORTEST
            for form in (secret, quote(secret, safe=""), quote_plus(secret))
        }
        self._secrets = sorted(set(self._secrets) | new, key=len, reverse=True)
        alternatives = "|".join(map(re.escape, self._secrets))
        # Case-insensitive: a server may echo a token lower-cased.
        self._pattern = (
            re.compile(alternatives, re.IGNORECASE) if alternatives else None
        )

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret (any case, URL-encoded) masked."""
        if self._pattern is None:
            return text
        return self._pattern.sub(_MASK, text)

    def format(self, record: logging.LogRecord) -> str:
        """Format a record as usual, then mask secrets and control characters."""
        text = self.redact(super().format(record))
        # Text from servers must not drive the terminal (escape sequences, BEL);
        # line breaks stay, for tracebacks at DEBUG.
        return _CONTROL.sub(" ", text)
