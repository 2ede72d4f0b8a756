"""Canary secrets: run every command at DEBUG and look for them everywhere."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import MakeScim2Server
from tests.support.directory import example_directory
from tests.support.fake_insights import FakeInsights
from tests.test_end_to_end import insights_env, run

SCIM_CANARY = "scim-canary-7f3a9c1e"
INSIGHTS_CANARY = "insights-canary-5b2d8e4f"
BASIC_FORM = base64.b64encode(f"alice:{SCIM_CANARY}".encode()).decode()
FORMS = (SCIM_CANARY, INSIGHTS_CANARY, BASIC_FORM)


def assert_clean(*texts: str) -> None:
    for text in texts:
        for form in FORMS:
            assert form not in text


@pytest.fixture
def echo_server() -> Iterator[str]:
    """A hostile SCIM server that echoes the Authorization header in its errors."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            status = 401 if "Users" in self.path else 404
            body = json.dumps({"detail": f"bad credentials {header} at {self.path}"})
            self.send_response(status)
            self.send_header("Content-Type", "application/scim+json")
            self.send_header("WWW-Authenticate", header)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/scim/v2"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("basic", [False, True])
def test_no_secret_in_any_output_of_a_successful_push(
    make_scim2_server: MakeScim2Server, tmp_path: Path, basic: bool
) -> None:
    auth = (
        {"basic": ("alice", SCIM_CANARY)} if basic else {"bearer_tokens": [SCIM_CANARY]}
    )
    server = make_scim2_server(example_directory(users=12, groups=3), **auth)
    scim = {
        "ELIMITY_SCIM_BASE_URL": server.base_url,
        "ELIMITY_SCIM_PASSWORD": SCIM_CANARY,
    }
    if basic:
        scim["ELIMITY_SCIM_USERNAME"] = "alice"
    output = tmp_path / "snapshot.json"
    with FakeInsights(source_id=42, token=INSIGHTS_CANARY) as fake:
        env = {**scim, **insights_env(fake, tmp_path / "state.json")}
        env["ELIMITY_INSIGHTS_TOKEN"] = INSIGHTS_CANARY
        pushed = run("--log-level", "DEBUG", "run", "scim", env=env)
        written = run("run", "scim", "--output", str(output), env=env)
        checked = run("check", "scim", env=env)
        logs = json.dumps(fake.logs)
        snapshots = json.dumps(fake.snapshots)
    assert pushed.returncode == written.returncode == checked.returncode == 0, (
        pushed.stderr
    )
    assert len(json.loads(snapshots)) == 1
    assert_clean(
        pushed.stdout,
        pushed.stderr,
        written.stdout,
        written.stderr,
        checked.stdout,
        checked.stderr,
        logs,
        snapshots,
        output.read_text(),
        (tmp_path / "state.json").read_text(),
    )


@pytest.mark.parametrize("basic", [False, True])
def test_an_echoing_server_cannot_make_the_secret_appear(
    echo_server: str, tmp_path: Path, basic: bool
) -> None:
    env = {"ELIMITY_SCIM_BASE_URL": echo_server, "ELIMITY_SCIM_PASSWORD": SCIM_CANARY}
    if basic:
        env["ELIMITY_SCIM_USERNAME"] = "alice"
    with FakeInsights(source_id=42, token=INSIGHTS_CANARY) as fake:
        env |= insights_env(fake, tmp_path / "state.json")
        env["ELIMITY_INSIGHTS_TOKEN"] = INSIGHTS_CANARY
        result = run("run", "scim", env=env)
        checked = run("check", "scim", env=env)
        logs = json.dumps(fake.logs)
    assert result.returncode == checked.returncode == 3
    assert "bad credentials" in result.stderr
    assert "[redacted]" in result.stderr
    assert "alert" in logs
    assert_clean(result.stdout, result.stderr, checked.stdout, checked.stderr, logs)


def test_a_wrong_insights_token_is_not_shown(
    make_scim2_server: MakeScim2Server, tmp_path: Path
) -> None:
    server = make_scim2_server(
        example_directory(users=3, groups=1), bearer_tokens=["right-token"]
    )
    with FakeInsights(source_id=42, token="the-real-insights-token") as fake:
        env = {
            "ELIMITY_SCIM_BASE_URL": server.base_url,
            "ELIMITY_SCIM_PASSWORD": "right-token",
            **insights_env(fake, tmp_path / "state.json"),
            "ELIMITY_INSIGHTS_TOKEN": INSIGHTS_CANARY,
        }
        result = run("--log-level", "DEBUG", "run", "scim", env=env)
    assert result.returncode == 5
    assert "status 401" in result.stderr
    assert_clean(result.stdout, result.stderr)


def test_secrets_have_no_command_line_flags() -> None:
    for flag in ("--password", "--token", "--insights-token", "--source-token"):
        result = run("run", "scim", flag, "x", env={})
        assert result.returncode == 2
        assert "unrecognized arguments" in result.stderr
