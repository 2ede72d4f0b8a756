"""Logging that never shows a secret."""

from __future__ import annotations

import logging
from collections.abc import Iterable

_MASK = "[redacted]"
_SHORTEST = 4


class RedactingFormatter(logging.Formatter):
    """A formatter that masks known secret values anywhere in the output."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._secrets: list[str] = []

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on.

        Values shorter than four characters are not masked: they would garble every
        line, and they are no secret worth the name.
        """
        new = {secret for secret in secrets if len(secret) >= _SHORTEST}
        self._secrets = sorted(set(self._secrets) | new, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret masked."""
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text

    def format(self, record: logging.LogRecord) -> str:
        """Format a record as usual, then mask secrets in the result."""
        return self.redact(super().format(record))
