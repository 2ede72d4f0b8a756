"""``elimity-connector run scim`` as a subprocess, against a real scim2-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.conftest import (
    BASIC_CREDENTIALS,
    BEARER_TOKEN,
    INSIGHTS_SOURCE_ID,
    INSIGHTS_TOKEN,
    MakeScim2Server,
)
from tests.support.directory import SeededDirectory, example_directory
from tests.support.fake_insights import FakeInsights, summarize
from tests.support.scim2 import Scim2Server

CONNECTOR = str(Path(sys.executable).with_name("elimity-connector"))
PAGINATION = {
    "cursor": True,
    "index": True,
    "defaultPaginationMethod": "cursor",
    "defaultPageSize": 10,
    "maxPageSize": 7,
    "cursorTimeout": 600,
}


def run(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the console script with a clean, explicit environment."""
    environ = {"PATH": os.environ.get("PATH", ""), "ELIMITY_LOG_LEVEL": "DEBUG", **env}
    return subprocess.run(
        [CONNECTOR, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def scim_env(server: Scim2Server, **settings: str) -> dict[str, str]:
    env = {
        "ELIMITY_SCIM_BASE_URL": server.base_url,
        "ELIMITY_SCIM_PASSWORD": BEARER_TOKEN,
    }
    env.update(
        {f"ELIMITY_SCIM_{key.upper()}": value for key, value in settings.items()}
    )
    return env


STATE_DIR = tempfile.mkdtemp(prefix="elimity-state-")


def insights_env(fake: FakeInsights, state_file: Path | None = None) -> dict[str, str]:
    state = state_file or Path(STATE_DIR) / f"{fake.url.rpartition(':')[2]}.json"
    return {
        "ELIMITY_STATE_FILE": str(state),
        "ELIMITY_INSIGHTS_URL": fake.url,
        "ELIMITY_SOURCE_ID": str(INSIGHTS_SOURCE_ID),
        "ELIMITY_INSIGHTS_TOKEN": INSIGHTS_TOKEN,
    }


def indirect(seeded: SeededDirectory) -> set[tuple[str, str]]:
    """(user, group) pairs reached only through nested groups."""
    parents: dict[str, set[str]] = {}
    for child, parent in seeded.group_memberships:
        parents.setdefault(child, set()).add(parent)
    found = set()
    for user, group in seeded.user_memberships:
        stack, seen = [group], set()
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        found |= {(user, ancestor) for ancestor in seen}
    return found - seeded.user_memberships


def test_run_pushes_exactly_the_directory(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    fake_insights: FakeInsights,
) -> None:
    server, seeded = scim2_server_bearer
    result = run(
        "run",
        "scim",
        env={**scim_env(server, page_size="13"), **insights_env(fake_insights)},
    )

    assert result.returncode == 0, result.stderr
    assert fake_insights.rejections == []
    assert len(fake_insights.snapshots) == 1
    summary = summarize(fake_insights.snapshots[0])
    assert set(summary.users) == set(seeded.users)
    assert set(summary.groups) == set(seeded.groups)
    for user_id, resource in seeded.users.items():
        assert summary.users[user_id]["userName"] == resource["userName"]
        assert summary.users[user_id]["name"] == resource.get(
            "displayName", resource["userName"]
        )
    for group_id, resource in seeded.groups.items():
        assert summary.groups[group_id]["name"] == resource["displayName"]
    expected = {pair: "direct" for pair in seeded.user_memberships}
    expected |= {pair: "indirect" for pair in indirect(seeded)}
    assert summary.user_memberships == expected
    assert summary.group_memberships == seeded.group_memberships
    assert any(kind == "indirect" for kind in expected.values())

    (logs,) = fake_insights.logs
    assert [log["level"] for log in logs] == ["info"]
    assert logs[0]["message"].startswith(
        f"Imported {len(seeded.users)} Users, {len(seeded.groups)} Groups"
    )
    dangling = "member references that point at nothing the server listed"
    assert f"{len(seeded.dangling)} × {dangling}" in result.stderr
    assert BEARER_TOKEN not in result.stderr + result.stdout
    assert INSIGHTS_TOKEN not in result.stderr + result.stdout


def test_basic_auth_and_output_file(
    scim2_server_basic: tuple[Scim2Server, SeededDirectory], tmp_path: Path
) -> None:
    server, seeded = scim2_server_basic
    output = tmp_path / "snapshot.json"
    env = {
        "ELIMITY_SCIM_BASE_URL": server.base_url + "/",
        "ELIMITY_SCIM_USERNAME": BASIC_CREDENTIALS[0],
        "ELIMITY_SCIM_PASSWORD": BASIC_CREDENTIALS[1],
    }
    result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 0, result.stderr
    snapshot = json.loads(output.read_text())
    assert list(snapshot) == ["entities", "relationships"]
    summary = summarize(snapshot)
    assert set(summary.users) == set(seeded.users)
    assert {
        p for p, kind in summary.user_memberships.items() if kind == "direct"
    } == seeded.user_memberships
    assert list(tmp_path.iterdir()) == [output]


def test_cursor_paging_with_a_page_cap_gives_the_same_snapshot(
    make_scim2_server: MakeScim2Server, tmp_path: Path
) -> None:
    directory = example_directory(users=40, groups=8, seed=5)
    plain = make_scim2_server(directory, bearer_tokens=[BEARER_TOKEN])
    capped = make_scim2_server(
        directory, bearer_tokens=[BEARER_TOKEN], pagination=PAGINATION
    )
    outputs = []
    for server in (plain, capped):
        output = tmp_path / f"{server.port}.json"
        result = run(
            "run", "scim", "--output", str(output), env=scim_env(server, page_size="20")
        )
        assert result.returncode == 0, result.stderr
        outputs.append(summarize(json.loads(output.read_text())))
    assert "by cursor paging, up to 7 per page" in result.stderr
    cursor_requests = [path for method, path in capped.requests if "/Users?" in path]
    assert all("startIndex" not in path for path in cursor_requests)
    assert len(cursor_requests) >= 40 // 7
    # Ids differ between the two servers; compare by userName and group names.
    names = [
        (
            sorted(u["userName"] for u in s.users.values()),
            sorted(g["name"] for g in s.groups.values()),
            len(s.user_memberships),
            len(s.group_memberships),
        )
        for s in outputs
    ]
    assert names[0] == names[1]


def test_snapshot_is_identical_with_concurrency_1_and_8(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory], tmp_path: Path
) -> None:
    server, _ = scim2_server_bearer
    texts = []
    for concurrency in ("1", "8"):
        output = tmp_path / f"c{concurrency}.json"
        env = scim_env(server, page_size="7", concurrency=concurrency)
        result = run("run", "scim", "--output", str(output), env=env)
        assert result.returncode == 0, result.stderr
        texts.append(output.read_bytes())
    assert texts[0] == texts[1]


def test_server_dying_on_page_3_pushes_nothing(
    make_scim2_server: MakeScim2Server, fake_insights: FakeInsights, tmp_path: Path
) -> None:
    server = make_scim2_server(
        example_directory(users=30, groups=3), bearer_tokens=[BEARER_TOKEN]
    )
    server.break_after("Users", 3)
    output = tmp_path / "snapshot.json"
    env = {
        **scim_env(
            server,
            page_size="5",
            retry_attempts="2",
            retry_backoff_ms="0",
            concurrency="1",
        ),
        **insights_env(fake_insights),
    }
    pushed = run("run", "scim", env=env)
    written = run("run", "scim", "--output", str(output), env=env)

    for result in (pushed, written):
        assert result.returncode == 4, result.stderr
        assert (
            f"SCIM request to {server.base_url}/Users failed with no response"
            in result.stderr
        )
        assert "startIndex" not in result.stderr.splitlines()[-1]
    assert fake_insights.snapshots == []
    assert fake_insights.snapshot_attempts == 0
    (logs,) = fake_insights.logs
    assert logs[0]["level"] == "alert"
    assert "nothing was pushed" in logs[0]["message"]
    assert f"{server.base_url}/Users" in logs[0]["message"]
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []


def test_wrong_token_exits_with_the_auth_code(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    fake_insights: FakeInsights,
) -> None:
    server, _ = scim2_server_bearer
    env = {
        **scim_env(server),
        "ELIMITY_SCIM_PASSWORD": "wrong-token-canary",
        **insights_env(fake_insights),
    }
    result = run("run", "scim", env=env)

    assert result.returncode == 3
    last = result.stderr.strip().splitlines()[-1]
    assert f"SCIM request to {server.base_url}/Users failed with status 401" in last
    assert "authentication failed" in last
    assert "wrong-token-canary" not in result.stderr
    assert fake_insights.snapshots == []
    assert [log["level"] for log in fake_insights.logs[0]] == ["alert"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "missing required option Base URL"),
        (
            {"ELIMITY_SCIM_BASE_URL": "ftp://x.test"},
            "Base URL must be an http:// or https:// URL",
        ),
        (
            {
                "ELIMITY_SCIM_BASE_URL": "https://x.test",
                "ELIMITY_SCIM_PAGE_SIZE": "many",
            },
            "Page size is 'many'",
        ),
    ],
)
def test_configuration_errors_exit_2(env: dict[str, str], message: str) -> None:
    result = run(
        "run",
        "scim",
        "--output",
        str(Path(tempfile.mkdtemp()) / "out.json"),
        env={"ELIMITY_SCIM_PASSWORD": "p", **env},
    )
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]


def test_push_needs_insights_settings() -> None:
    env = {"ELIMITY_SCIM_BASE_URL": "https://x.test", "ELIMITY_SCIM_PASSWORD": "p"}
    result = run("run", "scim", env=env)
    assert result.returncode == 2
    assert "pushing needs --insights-url or ELIMITY_INSIGHTS_URL" in result.stderr


def test_rejected_push_exits_with_the_push_code(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    fake_insights: FakeInsights,
) -> None:
    server, _ = scim2_server_bearer
    fake_insights.fail_snapshots_with = 500
    result = run("run", "scim", env={**scim_env(server), **insights_env(fake_insights)})
    assert result.returncode == 5
    assert "Insights refused the snapshot" in result.stderr
    assert "status 500" in result.stderr


def test_list_manifest_and_data_model_commands() -> None:
    listing = run("list", env={})
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[0].split("\t")[:2] == ["scim", "SCIM"]
    manifest = json.loads(run("manifest", "scim", env={}).stdout)
    assert [o["key"] for o in manifest["configuration"]] == [
        "baseUrl",
        "username",
        "password",
    ]
    model = json.loads(run("data-model", "scim", env={}).stdout)
    assert [t["id"] for t in model["entityTypes"]] == ["user", "group"]
    unknown = run("manifest", "nope", env={})
    assert unknown.returncode == 2
    assert "no source named 'nope' is installed" in unknown.stderr
