"""Safety guards: refuse to push a snapshot that reads fine but looks wrong.

A pushed snapshot replaces the source's whole graph in Insights, so an empty or
sharply shrunken reading (an expired token that lists nothing, a filter gone wrong)
would wipe real data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from elimity_scim.connector.errors import ConfigurationError, PushRefusedError
from elimity_scim.connector.snapshot import SnapshotCounts

logger = logging.getLogger(__name__)


def _totals(counts: SnapshotCounts) -> dict[str, int]:
    # Entity counts per type, and all relationships together: losing every
    # membership is as bad as losing users.
    return {**counts.entities, "relationships": sum(counts.relationships.values())}


def default_state_file(environ: Mapping[str, str]) -> Path:
    """Return the per-user state file: ``$XDG_STATE_HOME/elimity-connector/...``."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "elimity-connector" / "state.json"


@dataclass(frozen=True)
class PushGuard:
    """Checks a finished snapshot against the last one pushed to the same source."""

    key: str
    guarded_type: str
    allow_empty: bool
    max_drop: float | None
    state_file: Path

    def check(self, counts: SnapshotCounts) -> None:
        """Raise ``PushRefusedError`` when the snapshot must not be pushed."""
        if not self.allow_empty and counts.entities[self.guarded_type] == 0:
            msg = (
                f"refusing to push a snapshot without any {self.guarded_type}: it "
                "would empty the source in Insights (pass --allow-empty if intended)"
            )
            raise PushRefusedError(msg)
        if self.max_drop is None:
            return
        previous = self._previous()
        if previous is None:
            logger.info(
                "No earlier push recorded in %s; drop guard skipped", self.state_file
            )
            return
        before, pushed_at = previous
        now = _totals(counts)
        for entity_type, old in sorted(before.items()):
            new = now.get(entity_type, 0)
            if old > 0 and (old - new) / old > self.max_drop:
                drop = (old - new) / old
                msg = (
                    f"refusing to push: {entity_type} count fell from {old} to {new} "
                    f"({drop:.0%}) since the last push at {pushed_at}, more than the "
                    f"allowed {self.max_drop:.0%} (--max-drop)"
                )
                raise PushRefusedError(msg)
        logger.info("Drop guard passed against the push at %s", pushed_at)

    def record(self, counts: SnapshotCounts) -> None:
        """Remember the counts of a successful push; a failure only warns."""
        try:
            state = self._load()
            state[self.key] = {
                "counts": _totals(counts),
                "pushedAt": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.state_file.parent, delete=False, suffix=".tmp"
            ) as handle:
                json.dump(state, handle, indent=2, sort_keys=True)
            os.replace(handle.name, self.state_file)
        except (OSError, ValueError) as exc:
            logger.warning("Could not record the push in %s: %s", self.state_file, exc)

    def _previous(self) -> tuple[dict[str, int], str] | None:
        entry = self._load(strict=True).get(self.key)
        if entry is None:
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("counts"), dict):
            msg = (
                f"refusing to push: the entry for this source in {self.state_file} "
                "is malformed; repair or remove it"
            )
            raise PushRefusedError(msg)
        counts = {str(k): v for k, v in entry["counts"].items() if isinstance(v, int)}
        return counts, str(entry.get("pushedAt", "an unknown time"))

    def _load(self, *, strict: bool = False) -> dict[str, object]:
        # strict: the drop guard fails closed; a guard that cannot compare must not
        # let a push through.
        try:
            loaded: object = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            if strict:
                msg = (
                    f"refusing to push: the drop guard cannot read its state file "
                    f"{self.state_file} ({exc}); repair or remove it"
                )
                raise PushRefusedError(msg) from exc
            logger.warning(
                "Ignoring unreadable state file %s: %s", self.state_file, exc
            )
            return {}
        if not isinstance(loaded, dict):
            if strict:
                msg = f"refusing to push: state file {self.state_file} is not an object"
                raise PushRefusedError(msg)
            return {}
        return loaded

    def check_writable(self) -> None:
        """Fail before reading when the state file could not be written."""
        folder = self.state_file.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if self.state_file.is_dir() or not os.access(folder, os.W_OK):
            msg = f"the state file {self.state_file} cannot be written"
            raise ConfigurationError(msg)
