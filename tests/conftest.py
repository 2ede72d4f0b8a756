"""Shared fixtures: a fake Elimity Insights and real scim2-servers on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.directory import Directory, SeededDirectory, example_directory
from tests.support.fake_insights import FakeInsights
from tests.support.scim2 import Scim2Server

INSIGHTS_SOURCE_ID = 42
INSIGHTS_TOKEN = "test-insights-token"
BEARER_TOKEN = "test-bearer-token"
BASIC_CREDENTIALS = ("alice", "test-basic-password")

MakeScim2Server = Callable[..., Scim2Server]


@pytest.fixture
def fake_insights() -> Iterator[FakeInsights]:
    """A fresh fake Insights for source 42 with token ``test-insights-token``."""
    with FakeInsights(source_id=INSIGHTS_SOURCE_ID, token=INSIGHTS_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="session")
def scim2_server_bearer() -> Iterator[tuple[Scim2Server, SeededDirectory]]:
    """A shared server (Bearer ``test-bearer-token``): 120 users, 15 groups.

    Shared by the whole session: read it, never change or break it.
    """
    with Scim2Server(bearer_tokens=[BEARER_TOKEN]) as server:
        directory = example_directory(users=120, groups=15, dangling=3)
        yield server, server.seed(directory)


@pytest.fixture(scope="session")
def scim2_server_basic() -> Iterator[tuple[Scim2Server, SeededDirectory]]:
    """A shared server with HTTP Basic ``alice``: 30 users, 6 groups.

    Shared by the whole session: read it, never change or break it.
    """
    with Scim2Server(basic=BASIC_CREDENTIALS) as server:
        directory = example_directory(users=30, groups=6, seed=2, dangling=1)
        yield server, server.seed(directory)


@pytest.fixture
def make_scim2_server() -> Iterator[MakeScim2Server]:
    """A factory of servers of this test only, to change or break at will.

    ``make_scim2_server(directory=None, **options)`` starts a `Scim2Server` with
    the options, seeds ``directory`` when given (see ``server.seeded``), and
    stops the server after the test.
    """
    servers: list[Scim2Server] = []

    def make(directory: Directory | None = None, **options: Any) -> Scim2Server:
        server = Scim2Server(**options).start()
        servers.append(server)
        if directory is not None:
            server.seed(directory)
        return server

    yield make
    for server in servers:
        server.stop()
