"""Tolerated irregularities, counted during a run and reported once at its end."""

from __future__ import annotations

import logging
import threading
from collections import Counter

_EXAMPLES = 3


class Warnings:
    """Counts each kind of tolerated irregularity, with a few example ids."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, example: str | None = None, count: int = 1) -> None:
        """Count ``count`` occurrences of ``kind``, keeping a few examples."""
        with self._lock:
            self.counts[kind] += count
            examples = self.examples.setdefault(kind, [])
            if example is not None and len(examples) < _EXAMPLES:
                examples.append(example)

    def lines(self) -> list[str]:
        """Return one line per kind: count, description and examples."""
        lines = []
        for kind, count in sorted(self.counts.items()):
            examples = self.examples.get(kind) or []
            shown = f" (e.g. {', '.join(examples)})" if examples else ""
            lines.append(f"{count} × {kind}{shown}")
        return lines

    def log(self, logger: logging.Logger) -> None:
        """Log every counted kind as one WARNING line."""
        for line in self.lines():
            logger.warning("%s", line)
