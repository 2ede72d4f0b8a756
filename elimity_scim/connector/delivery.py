"""Deliver a snapshot: push it to Elimity Insights, or write it to a file."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests
from elimity_insights_client import (
    Client,
    Config,
    ConnectorLog,
    DomainGraph,
    Entity,
    Level,
    Relationship,
)

from elimity_scim.connector.contract import Item
from elimity_scim.connector.errors import PushError, SnapshotError
from elimity_scim.connector.snapshot import encode_snapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InsightsTarget:
    """Where and as whom to push: an Insights server and one custom source."""

    url: str
    source_id: int
    token: str

    def client(self) -> Client:
        """Return an Insights client for this source."""
        config = Config(id=self.source_id, url=self.url.rstrip("/"), token=self.token)
        return Client(config)


def push_snapshot(target: InsightsTarget, items: Iterable[Item]) -> None:
    """Push a complete snapshot, replacing the source's graph in Insights.

    The client iterates every item before it sends a byte, so an error raised
    while reading aborts the push with nothing sent.
    """
    entities, relationships = split_items(items)
    graph = DomainGraph(entities=entities, relationships=relationships)
    try:
        target.client().reload_domain_graph(graph)
    except requests.RequestException as exc:
        raise PushError(_push_failure("snapshot", target, exc)) from exc


def send_log(target: InsightsTarget, level: Level, message: str) -> None:
    """Add one line to the source's connector log in Insights."""
    log = ConnectorLog(level=level, message=message, timestamp=datetime.now(UTC))
    try:
        target.client().create_connector_logs([log])
    except requests.RequestException as exc:
        raise PushError(_push_failure("connector log", target, exc)) from exc


def write_snapshot_file(path: Path, items: Iterable[Item]) -> None:
    """Write the snapshot JSON to ``path``, atomically: a failed run leaves no file."""
    directory = path.parent if str(path.parent) else Path()
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
        mode="w",
        encoding="ascii",
        dir=directory,
        prefix=f".{path.name}.",
        suffix=".partial",
        delete=False,
    )
    try:
        with handle:
            encode_snapshot(items, handle.write)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def split_items(
    items: Iterable[Item],
) -> tuple[Iterator[Entity], Iterator[Relationship]]:
    """Split one stream into entities and relationships, lazily and in order.

    The relationships iterator may only be used once the entities are exhausted,
    which is how ``reload_domain_graph`` consumes them.
    """
    stream = iter(items)
    pending: list[Relationship] = []

    def entities() -> Iterator[Entity]:
        for item in stream:
            if isinstance(item, Relationship):
                pending.append(item)
                return
            yield item

    def relationships() -> Iterator[Relationship]:
        yield from pending
        for item in stream:
            if isinstance(item, Entity):
                msg = "an entity came after the first relationship"
                raise SnapshotError(msg)
            yield item

    return entities(), relationships()


def _push_failure(what: str, target: InsightsTarget, exc: Exception) -> str:
    url = f"{target.url.rstrip('/')}/api/sources/{target.source_id}"
    response = getattr(exc, "response", None)
    if isinstance(response, requests.Response):
        reason = response.text.strip().splitlines()[:1]
        detail = f": {reason[0][:200]}" if reason else ""
        return (
            f"Insights refused the {what} at {url} with status "
            f"{response.status_code}{detail}"
        )
    return f"could not deliver the {what} to {url}: {type(exc).__name__}"
