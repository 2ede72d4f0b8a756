"""Push guards, insecure transport refusals and TLS options, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import BEARER_TOKEN, MakeScim2Server
from tests.support.directory import example_directory
from tests.support.fake_insights import FakeInsights
from tests.test_end_to_end import insights_env, run, scim_env


def test_zero_users_is_refused_unless_allowed(
    make_scim2_server: MakeScim2Server, fake_insights: FakeInsights, tmp_path: Path
) -> None:
    server = make_scim2_server(bearer_tokens=[BEARER_TOKEN])
    env = {**scim_env(server), **insights_env(fake_insights, tmp_path / "state.json")}

    refused = run("run", "scim", env=env)
    assert refused.returncode == 6
    assert "refusing to push a snapshot without any user" in refused.stderr
    assert fake_insights.snapshot_attempts == 0
    assert [log["level"] for log in fake_insights.logs[0]] == ["alert"]
    assert "refusing to push" in fake_insights.logs[0][0]["message"]

    allowed = run("run", "scim", "--allow-empty", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert fake_insights.latest == {"entities": [], "relationships": []}


def test_drop_guard_compares_with_the_last_push(
    make_scim2_server: MakeScim2Server, fake_insights: FakeInsights, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    big = make_scim2_server(
        example_directory(users=20, groups=4), bearer_tokens=[BEARER_TOKEN]
    )
    small = make_scim2_server(
        example_directory(users=8, groups=4), bearer_tokens=[BEARER_TOKEN]
    )

    first = run(
        "run",
        "scim",
        "--max-drop",
        "0.5",
        env={**scim_env(big), **insights_env(fake_insights, state)},
    )
    assert first.returncode == 0, first.stderr
    recorded = json.loads(state.read_text())
    (entry,) = recorded.values()
    assert (entry["counts"]["user"], entry["counts"]["group"]) == (20, 4)
    assert entry["counts"]["relationships"] > 20
    assert list(recorded) == [f"{fake_insights.url}#42"]

    env = {
        **scim_env(small),
        **insights_env(fake_insights, state),
        "ELIMITY_MAX_DROP": "0.5",
    }
    second = run("run", "scim", env=env)
    assert second.returncode == 6
    last = second.stderr.strip().splitlines()[-1]
    assert "user count fell from 20 to 8 (60%)" in last
    assert "more than the allowed 50%" in last
    assert len(fake_insights.snapshots) == 1
    assert (
        json.loads(state.read_text())[f"{fake_insights.url}#42"]["counts"]["user"] == 20
    )

    third = run("run", "scim", "--max-drop", "0.7", env=env)
    assert third.returncode == 0, third.stderr
    assert len(fake_insights.snapshots) == 2


def test_plain_http_to_another_host_is_refused() -> None:
    env = {
        "ELIMITY_SCIM_BASE_URL": "http://scim.example.test/v2",
        "ELIMITY_SCIM_PASSWORD": "secret-value",
    }
    result = run("run", "scim", "--output", "out.json", env=env)
    assert result.returncode == 2
    assert "plain http:// to another host" in result.stderr
    assert "allowInsecureHttp" in result.stderr


def test_plain_http_insights_url_is_refused(make_scim2_server: MakeScim2Server) -> None:
    server = make_scim2_server(bearer_tokens=[BEARER_TOKEN])
    env = {
        **scim_env(server),
        "ELIMITY_INSIGHTS_URL": "http://insights.example.test",
        "ELIMITY_SOURCE_ID": "42",
        "ELIMITY_INSIGHTS_TOKEN": "insights-secret",
    }
    result = run("run", "scim", env=env)
    assert result.returncode == 2
    assert "--allow-insecure-http" in result.stderr
    assert server.requests == []


def test_tls_verification_off_warns(
    make_scim2_server: MakeScim2Server, tmp_path: Path
) -> None:
    server = make_scim2_server(
        example_directory(users=3, groups=1), bearer_tokens=[BEARER_TOKEN]
    )
    output = tmp_path / "out.json"
    result = run(
        "run", "scim", "--output", str(output), env=scim_env(server, verify_tls="false")
    )
    assert result.returncode == 0, result.stderr
    assert "TLS certificate verification is OFF" in result.stderr


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    certificate = tmp_path / "client.pem"
    certificate.write_text("not really a certificate")
    env = {
        "ELIMITY_SCIM_BASE_URL": "https://scim.example.test",
        "ELIMITY_SCIM_PASSWORD": "secret-value",
        "ELIMITY_SCIM_CLIENT_CERTIFICATE": str(certificate),
    }
    result = run("run", "scim", "--output", str(tmp_path / "o.json"), env=env)
    assert result.returncode == 2
    assert "clientCertificate and clientKey go together" in result.stderr


def test_a_malformed_entry_in_the_state_file_refuses_the_push(
    make_scim2_server: MakeScim2Server, fake_insights: FakeInsights, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({f"{fake_insights.url}#42": "not an object"}))
    server = make_scim2_server(
        example_directory(users=5, groups=2), bearer_tokens=[BEARER_TOKEN]
    )
    env = {**scim_env(server), **insights_env(fake_insights, state)}
    result = run("run", "scim", "--max-drop", "0.5", env=env)
    assert result.returncode == 6
    assert "the entry for this source in" in result.stderr
    assert "is malformed" in result.stderr
    assert fake_insights.snapshot_attempts == 0
