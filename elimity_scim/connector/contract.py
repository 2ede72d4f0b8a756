"""The plugin contract: how sources are declared, found and loaded."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Protocol, cast

from elimity_insights_client import Entity, Relationship

from elimity_scim.connector.errors import ConfigurationError

ENTRY_POINT_GROUP = "elimity_insights.sources"

Item = Entity | Relationship


class Source(Protocol):
    """What an installed source offers the runner."""

    def manifest(self) -> dict[str, object]:
        """Return the parsed ``manifest.json`` of the source."""

    def data_model(self) -> dict[str, object]:
        """Return the Insights data model JSON the source's snapshots follow."""

    def read(self, options: Mapping[str, object]) -> Iterator[Item]:
        """Yield every entity, then every relationship, of one complete reading."""


class Checkable(Protocol):
    """A source that can also diagnose its configuration without importing."""

    def check(self, options: Mapping[str, object]) -> Iterator[str]:
        """Yield the lines of a short report; raise a ``SourceError`` on failure."""


def source_names() -> list[str]:
    """Return the names of the installed sources, sorted."""
    return sorted(entry.name for entry in entry_points(group=ENTRY_POINT_GROUP))


def load_source(name: str) -> Source:
    """Instantiate the installed source registered under ``name``."""
    matches = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not matches:
        installed = ", ".join(source_names()) or "none"
        msg = f"no source named {name!r} is installed (installed: {installed})"
        raise ConfigurationError(msg)
    factory: object = next(iter(matches)).load()
    if not callable(factory):
        msg = f"the entry point of source {name!r} is not callable"
        raise ConfigurationError(msg)
    return cast(Source, factory())
