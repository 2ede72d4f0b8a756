"""Progress of a long import: a live line on a terminal, else periodic log lines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Never, TypeVar

from tqdm import tqdm

from elimity_scim.connector.snapshot import SnapshotCounts

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_EVERY = 1000  # items between two looks at the clock


class Progress:
    """Reports counts while items stream past; cheap enough for every item."""

    def __init__(
        self,
        counts: SnapshotCounts,
        data_model: Mapping[str, object],
        extra: Callable[[], Mapping[str, int]] = dict,
        *,
        interval: float = 15.0,
        live: bool | None = None,
    ) -> None:
        self._counts = counts
        self._plurals = _plurals(data_model)
        self._extra = extra
        self._interval = interval
        self._live = sys.stderr.isatty() if live is None else live
        self._started = time.monotonic()
        self._last = self._started

    def track(self, items: Iterable[_T]) -> Iterator[_T]:
        """Yield the items unchanged, reporting progress on the way."""
        bar: tqdm[Never] = tqdm(
            disable=not self._live,
            file=sys.stderr,
            unit=" items",
            dynamic_ncols=True,
            mininterval=0.5,
        )
        done = 0
        try:
            for item in items:
                yield item
                done += 1
                if done % _EVERY == 0:
                    self._report(bar, done)
            self._report(bar, done, final=True)
        finally:
            bar.close()

    def line(self, done: int) -> str:
        """Return the current counts as one line."""
        parts = [
            f"{self._counts.entities[t]} {plural.lower()}"
            for t, plural in self._plurals.items()
        ]
        parts.append(f"{sum(self._counts.relationships.values())} relationships")
        extra = ", ".join(f"{v} {k}" for k, v in self._extra().items())
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = f"{done / elapsed:.0f} items/s"
        return ", ".join(parts) + (f"; {extra}" if extra else "") + f"; {rate}"

    def _report(self, bar: tqdm[Never], done: int, *, final: bool = False) -> None:
        if self._live:
            bar.update(done - int(bar.n))
            bar.set_postfix_str(self.line(done), refresh=False)
            return
        now = time.monotonic()
        if not final and now - self._last >= self._interval:
            self._last = now
            logger.info("Progress: %s", self.line(done))


def _plurals(data_model: Mapping[str, object]) -> dict[str, str]:
    types = data_model.get("entityTypes")
    if not isinstance(types, list):
        return {}
    return {
        str(t.get("id")): str(t.get("plural", t.get("id")))
        for t in types
        if isinstance(t, dict)
    }
