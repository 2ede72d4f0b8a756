"""One regression test per bug fixed in dfd7c2b, each through the real CLI.

The fakes live on 127.0.0.1 at port 0. Where neither `FakeScim` nor `FakeInsights`
can misbehave the way a bug needs, `TinyServer` answers with a function of the
request.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from elimity_scim.connector.config import env_name
from elimity_scim.diagnostics import Warnings
from elimity_scim.membership import Memberships
from elimity_scim.source import ScimSource
from tests.conftest import INSIGHTS_SOURCE_ID, INSIGHTS_TOKEN
from tests.support.fake_insights import FakeInsights, summarize
from tests.support.fake_scim import (
    FakeScim,
    Fault,
    Resource,
    group,
    member,
    read_fake,
    read_options,
    user,
)
from tests.test_end_to_end import CONNECTOR, insights_env, run

BASE_PATH = "/scim/v2"
REF = "https://scim.example.test/scim/v2"
ESC = "\x1b"

# -- A tiny scriptable HTTP server ----------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as `TinyServer` received it."""

    method: str
    path: str
    """URL-decoded path, without the query string."""
    query: dict[str, str]
    headers: dict[str, str]
    """Header names lower-cased."""
    body: bytes


Reply = tuple[int, dict[str, str], bytes]
Respond = Callable[[Seen], Reply]


class TinyServer:
    """A threading HTTP(S) server on ``127.0.0.1:0`` that answers ``respond(seen)``."""

    def __init__(self, respond: Respond, context: ssl.SSLContext | None = None):
        self.respond = respond
        self.context = context
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> TinyServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(self.timeout)
                    self.request.do_handshake()
                super().setup()

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    method=self.command,
                    path=unquote(parts.path),
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with owner._lock:
                    owner.requests.append(seen)
                status, headers, body = owner.respond(seen)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # failed TLS handshakes are part of the tests

        server = Server(("127.0.0.1", 0), Handler)
        if self.context is not None:
            server.socket = self.context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:PORT``."""
        assert self._server is not None
        scheme = "http" if self.context is None else "https"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The SCIM base URL: ``url`` plus ``/scim/v2``."""
        return self.url + BASE_PATH


def json_reply(status: int, body: object, **headers: str) -> Reply:
    return status, {"Content-Type": "application/scim+json", **headers}, _dumps(body)


def _dumps(body: object) -> bytes:
    return json.dumps(body).encode()


def list_reply(resources: Sequence[object], total: int) -> Reply:
    return json_reply(
        200,
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "itemsPerPage": len(resources),
            "Resources": list(resources),
        },
    )


def _window(query: Mapping[str, str], pool: Sequence[object], first: int) -> Reply:
    # ``first`` is the index the server gives startIndex=first: 1 is RFC 7644, 0 is
    # the off-by-one server.
    start = int(query.get("startIndex", str(first))) - first
    count = int(query.get("count", str(len(pool))))
    return list_reply(pool[max(start, 0) : max(start, 0) + count], len(pool))


def directory(users: Sequence[Resource], groups: Sequence[Resource]) -> Respond:
    """A SCIM server that pages by index (1-based) and knows no filter at all."""

    def respond(seen: Seen) -> Reply:
        path = seen.path.removeprefix(BASE_PATH)
        if path == "/Users":
            return _window(seen.query, users, 1)
        if path == "/Groups":
            return _window(seen.query, groups, 1)
        kind, _, wanted = path.strip("/").partition("/")
        pool = {"Users": users, "Groups": groups}.get(kind, [])
        for resource in pool:
            if resource["id"] == wanted:
                return json_reply(200, resource)
        return json_reply(404, {"detail": f"no {path}", "status": "404"})

    return respond


# -- Environments -----------------------------------------------------------------


def scim_at(
    base_url: str, password: str = "scim-test-token", **settings: str
) -> dict[str, str]:
    """SCIM options and fast settings (``settings`` by manifest key)."""
    env = {
        "ELIMITY_SCIM_BASE_URL": base_url,
        "ELIMITY_SCIM_PASSWORD": password,
        "ELIMITY_SCIM_RETRY_BACKOFF_MS": "0",
        "ELIMITY_SCIM_REQUEST_TIMEOUT": "5",
    }
    env.update({env_name("scim", key): value for key, value in settings.items()})
    return env


def insights_at(
    url: str, state_file: Path, token: str = INSIGHTS_TOKEN
) -> dict[str, str]:
    return {
        "ELIMITY_INSIGHTS_URL": url,
        "ELIMITY_SOURCE_ID": str(INSIGHTS_SOURCE_ID),
        "ELIMITY_INSIGHTS_TOKEN": token,
        "ELIMITY_STATE_FILE": str(state_file),
    }


def logged_messages(server: TinyServer) -> list[str]:
    """The messages of every connector log a `TinyServer` Insights received."""
    return [
        entry["message"]
        for seen in server.requests
        if seen.path.endswith("/connector-logs")
        for entry in json.loads(seen.body)
    ]


def flat_users() -> list[Resource]:
    return [user("u1"), user("u2"), user("u3")]


def flat_groups(with_members: bool = True) -> list[Resource]:
    if not with_members:
        return [group("g1"), group("g2"), group("g3")]
    return [
        group("g1", [member("u1", "User"), member("u2", "User")]),
        group("g2", [member("u3", "User")]),
        group("g3", [member("u1", "User")]),
    ]


# -- 1. Id-less entries on pages that never end ------------------------------------


def _idless_forever(per_page: int) -> Respond:
    entries = [{"userName": f"nobody{n}@example.test"} for n in range(per_page)]

    def respond(seen: Seen) -> Reply:
        if seen.path.endswith("/Users"):
            return list_reply(entries, 3)  # whatever startIndex asks
        return json_reply(404, {"detail": "not here"})

    return respond


def test_idless_pages_without_end_fail_as_broken_paging(tmp_path: Path) -> None:
    output = tmp_path / "snapshot.json"
    with TinyServer(_idless_forever(3)) as server:
        result = run(
            "run",
            "scim",
            "--output",
            str(output),
            env=scim_at(server.base_url),
            timeout=30,  # before the fix: endless
        )
        listings = [s for s in server.requests if s.path.endswith("/Users")]

    assert result.returncode == 4, result.stderr
    assert (
        f"paging is broken at {server.base_url}/Users: 3 pages in a row brought "
        "entries but no new resource"
    ) in result.stderr
    # The attributes= probe's first request (its ids-less answer leaves no user to
    # compare, so no narrowed request), then the first page and three without news.
    assert len(listings) == 5
    assert not output.exists()


def test_idless_entries_count_towards_max_resources(tmp_path: Path) -> None:
    output = tmp_path / "snapshot.json"
    with TinyServer(_idless_forever(4)) as server:
        env = scim_at(server.base_url, maxResources="10")
        result = run("run", "scim", "--output", str(output), env=env, timeout=30)

    assert result.returncode == 4, result.stderr
    assert (
        f"{server.base_url}/Users lists more than maxResources (10) resources"
    ) in result.stderr
    assert not output.exists()


# -- 2. $ref settles a member's kind where user and group ids overlap -------------

OVERLAPPING_USERS = ["1", "2", "3"]
OVERLAPPING_GROUPS: dict[str, list[dict[str, str]]] = {
    "1": [{"value": "2", "$ref": f"{REF}/Users/2"}],
    "2": [{"value": "3", "$ref": f"{REF}/Users/3"}],
    "3": [{"$ref": f"{REF}/Users/1"}],
    "10": [{"value": "1", "$ref": f"{REF}/Groups/1"}],
}
OVERLAPPING_USER_MEMBERSHIPS = {
    ("2", "1"): "direct",
    ("3", "2"): "direct",
    ("1", "3"): "direct",
    ("2", "10"): "indirect",
}


@pytest.mark.parametrize("order", [["1", "2", "3", "10"], ["10", "3", "2", "1"]])
def test_ref_settles_the_kind_of_members_with_overlapping_ids(
    order: list[str],
) -> None:
    memberships = Memberships(Warnings())
    for user_id in OVERLAPPING_USERS:
        memberships.add_user(user_id)
    for group_id in order:
        memberships.add_group(group_id)
        for entry in OVERLAPPING_GROUPS[group_id]:
            memberships.add_member(group_id, entry)

    rows = {
        (r.from_entity_type, r.from_entity_id, r.to_entity_id): [
            getattr(a.value, "value", None) for a in r.attribute_assignments
        ]
        for r in memberships.relationships(effective=True)
    }
    expected = {
        ("user", u, g): [kind] for (u, g), kind in OVERLAPPING_USER_MEMBERSHIPS.items()
    }
    assert rows == {**expected, ("group", "1", "10"): []}
    counts = {g: memberships.member_count(g) for g in order}
    assert counts == {"1": 1, "2": 1, "3": 1, "10": 1}


def test_ref_settles_the_kind_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "snapshot.json"
    users = [user(u) for u in OVERLAPPING_USERS]
    groups = [group(g, members) for g, members in OVERLAPPING_GROUPS.items()]
    with FakeScim(users, groups) as fake:
        result = run("run", "scim", "--output", str(output), env=scim_at(fake.base_url))

    assert result.returncode == 0, result.stderr
    summary = summarize(json.loads(output.read_text()))
    assert summary.user_memberships == OVERLAPPING_USER_MEMBERSHIPS
    assert summary.group_memberships == {("1", "10")}


# -- 3. A server that ignores the filter parameter ---------------------------------


def test_auto_does_not_pick_filters_a_server_ignores(tmp_path: Path) -> None:
    output = tmp_path / "snapshot.json"
    with TinyServer(directory(flat_users(), flat_groups(False))) as server:
        result = run(
            "run", "scim", "--output", str(output), env=scim_at(server.base_url)
        )

    assert result.returncode == 4, result.stderr
    assert (
        "membership looks unavailable: none of 3 groups carries members in the list "
        "or when read by id, no user names a group, and filter queries find no "
        "member; refusing to import 3 groups as empty"
    ) in result.stderr
    assert f"{server.base_url}/Users ignores the filter parameter" in result.stderr
    assert not output.exists()


def test_filter_strategy_refuses_a_server_that_ignores_filters(tmp_path: Path) -> None:
    output = tmp_path / "snapshot.json"
    with TinyServer(directory(flat_users(), flat_groups(False))) as server:
        env = scim_at(server.base_url, membershipStrategy="filter")
        result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 4, result.stderr
    assert (
        f"{server.base_url}/Groups ignores the filter parameter (a filter on an id "
        "that cannot exist returned groups), so memberships cannot be read by "
        "filter; choose another membershipStrategy"
    ) in result.stderr
    assert not output.exists()


# -- 4. No member in any group: fail, unless told; the drop guard sees relationships


@pytest.mark.parametrize("strategy", ["inline", "perGroup", "userGroups"])
def test_a_strategy_that_finds_no_member_fails(tmp_path: Path, strategy: str) -> None:
    output = tmp_path / "snapshot.json"
    with FakeScim(flat_users(), flat_groups(False), user_groups=True) as fake:
        env = scim_at(fake.base_url, membershipStrategy=strategy)
        result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 4, result.stderr
    assert (
        f"membership strategy {strategy} found no member in any of 3 groups; "
        "refusing to import them as empty (set membershipStrategy=none to do so)"
    ) in result.stderr
    assert not output.exists()


def test_strategy_none_imports_groups_without_member_count(tmp_path: Path) -> None:
    output = tmp_path / "snapshot.json"
    with FakeScim(flat_users(), flat_groups(False)) as fake:
        env = scim_at(fake.base_url, membershipStrategy="none")
        result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 0, result.stderr
    summary = summarize(json.loads(output.read_text()))
    assert set(summary.groups) == {"g1", "g2", "g3"}
    assert all("memberCount" not in g for g in summary.groups.values())
    assert summary.user_memberships == {}


def test_drop_guard_refuses_losing_every_relationship(
    fake_insights: FakeInsights, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    with (
        FakeScim(flat_users(), flat_groups()) as full,
        FakeScim(flat_users(), flat_groups(False)) as emptied,
    ):
        first = run(
            "run",
            "scim",
            "--max-drop",
            "0.5",
            env={**scim_at(full.base_url), **insights_env(fake_insights, state)},
        )
        second = run(
            "run",
            "scim",
            "--max-drop",
            "0.5",
            env={
                **scim_at(emptied.base_url, membershipStrategy="none"),
                **insights_env(fake_insights, state),
            },
        )

    assert first.returncode == 0, first.stderr
    assert second.returncode == 6, second.stderr
    assert "refusing to push: relationships count fell from 4 to 0 (100%)" in (
        second.stderr
    )
    assert fake_insights.snapshot_attempts == 1


# -- 5. startIndex counted from 0 --------------------------------------------------


def test_a_server_counting_start_index_from_zero_is_detected(tmp_path: Path) -> None:
    users = [user(f"u{n}") for n in range(1, 6)]

    def respond(seen: Seen) -> Reply:
        if seen.path.endswith("/Users") or seen.path.endswith("/Groups"):
            pool = users if seen.path.endswith("/Users") else []
            return _window(seen.query, pool, 0)
        return json_reply(404, {"detail": "not here"})

    output = tmp_path / "snapshot.json"
    with TinyServer(respond) as server:
        result = run(
            "run", "scim", "--output", str(output), env=scim_at(server.base_url)
        )

    assert result.returncode == 4, result.stderr
    assert (
        f"{server.base_url}/Users seems to count startIndex from 0: reading from 1 "
        "misses 1 resource(s) such as 'u1'"
    ) in result.stderr
    assert not output.exists()


# -- 6. Echoed credentials are masked ------------------------------------------------

ECHO_TOKEN = "Insights-Echo-Token-7Qx2"
ECHO_BASIC = base64.b64encode(f"{INSIGHTS_SOURCE_ID}:{ECHO_TOKEN}".encode()).decode()


def _assert_no_insights_secret(text: str) -> None:
    assert ECHO_TOKEN.lower() not in text.lower()
    assert ECHO_BASIC not in text


@pytest.mark.parametrize("logs", ["accepted", "echoed"])
def test_insights_echoing_the_authorization_header_is_masked(
    tmp_path: Path, logs: str
) -> None:
    def respond(seen: Seen) -> Reply:
        header = seen.headers.get("authorization", "")
        decoded = base64.b64decode(header.partition(" ")[2]).decode()
        echo = f"who are you? {header} ({decoded}, {decoded.lower()})".encode()
        if seen.path.endswith("/connector-logs") and logs == "accepted":
            return 204, {}, b""
        return 401, {"Content-Type": "text/plain"}, echo

    with (
        FakeScim(flat_users(), flat_groups()) as scim,
        TinyServer(respond) as insights,
    ):
        env = {
            **scim_at(scim.base_url),
            **insights_at(insights.url, tmp_path / "state.json", ECHO_TOKEN),
        }
        result = run("run", "scim", env=env)

    assert result.returncode == 5, result.stderr
    assert "Insights refused the snapshot" in result.stderr
    assert "[redacted]" in result.stderr
    _assert_no_insights_secret(result.stderr)
    _assert_no_insights_secret(result.stdout)
    if logs == "accepted":
        (alert,) = logged_messages(insights)
        assert alert.startswith("Import failed, the snapshot was not accepted")
        _assert_no_insights_secret(alert)
    else:
        assert "could not send the alert to Insights" in result.stderr


def test_scim_server_echoing_a_lower_cased_token_is_masked(
    fake_insights: FakeInsights, tmp_path: Path
) -> None:
    token = "Scim-Echo-Token-AbCdEf123"

    def respond(seen: Seen) -> Reply:
        sent = seen.headers.get("authorization", "").partition(" ")[2]
        return json_reply(401, {"detail": f"unknown token {sent.lower()}"})

    with TinyServer(respond) as server:
        env = {
            **scim_at(server.base_url, password=token),
            **insights_env(fake_insights, tmp_path / "state.json"),
        }
        result = run("run", "scim", env=env)

    assert result.returncode == 3, result.stderr
    assert "unknown token [redacted]" in result.stderr
    assert token.lower() not in result.stderr.lower()
    messages = [entry["message"] for batch in fake_insights.logs for entry in batch]
    assert len(messages) == 1
    assert "unknown token [redacted]" in messages[0]
    assert token.lower() not in messages[0].lower()


# -- 8. --output is checked before any request ----------------------------------------


def _symlink_to_file(tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    return link


def _dangling_symlink(tmp_path: Path) -> Path:
    link = tmp_path / "dangling.json"
    link.symlink_to(tmp_path / "missing-target.json")
    return link


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "folder"
    folder.mkdir()
    return folder


def _in_missing_folder(tmp_path: Path) -> Path:
    return tmp_path / "no-such-folder" / "snapshot.json"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_symlink_to_file, "exists and is not a regular file"),
        (_dangling_symlink, "exists and is not a regular file"),
        (_folder, "--output must name a file, not a directory"),
        (_in_missing_folder, "does not exist or is not writable"),
    ],
    ids=["symlink", "dangling-symlink", "directory", "missing-folder"],
)
def test_unusable_output_path_fails_before_reading(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    output = make(tmp_path)
    with FakeScim(flat_users(), flat_groups()) as fake:
        result = run("run", "scim", "--output", str(output), env=scim_at(fake.base_url))
        requests_made = list(fake.requests)

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert requests_made == []
    if output.name == "link.json":
        assert (tmp_path / "elsewhere.json").read_text() == "keep me"


# -- 9. An HTML page answering the upload ---------------------------------------------


def test_an_html_answer_to_the_upload_is_a_push_failure(tmp_path: Path) -> None:
    def respond(seen: Seen) -> Reply:
        if seen.path.endswith("/snapshots"):
            page = b"<!doctype html><html><body>Sign in</body></html>"
            return 200, {"Content-Type": "text/html; charset=utf-8"}, page
        return 204, {}, b""

    with (
        FakeScim(flat_users(), flat_groups()) as scim,
        TinyServer(respond) as insights,
    ):
        env = {**scim_at(scim.base_url), **insights_at(insights.url, tmp_path / "s")}
        result = run("run", "scim", env=env)

    assert result.returncode == 5, result.stderr
    upload = f"{insights.url}/api/sources/{INSIGHTS_SOURCE_ID}/snapshots"
    assert (
        f"the answer to the snapshot upload at {upload} (status 200) is an HTML "
        "page, not Insights"
    ) in result.stderr
    (alert,) = logged_messages(insights)
    assert "is an HTML page" in alert
    assert not (tmp_path / "s").exists()  # nothing recorded as pushed


# -- 10. The info log failing after an accepted snapshot -----------------------------


def test_a_failed_info_log_after_an_accepted_snapshot_only_warns(
    fake_insights: FakeInsights, tmp_path: Path
) -> None:
    fake_insights.fail_logs_with = 500
    with FakeScim(flat_users(), flat_groups()) as fake:
        env = {
            **scim_at(fake.base_url),
            **insights_env(fake_insights, tmp_path / "state.json"),
        }
        result = run("run", "scim", env=env)

    assert result.returncode == 0, result.stderr
    assert len(fake_insights.snapshots) == 1
    assert (
        "WARNING elimity_scim.connector.cli: Snapshot accepted, but the connector log "
        f"failed: Insights refused the connector log at {fake_insights.url}/api/"
        f"sources/{INSIGHTS_SOURCE_ID} with status 500"
    ) in result.stderr


# -- 11. State file: garbage fails closed, a directory is a configuration error ----


@pytest.mark.parametrize(
    "garbage", [b"{not json", b"\xff\xfe\x00garbage"], ids=["text", "binary"]
)
def test_drop_guard_fails_closed_on_an_unreadable_state_file(
    fake_insights: FakeInsights, tmp_path: Path, garbage: bytes
) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(garbage)
    with FakeScim(flat_users(), flat_groups()) as fake:
        env = {**scim_at(fake.base_url), **insights_env(fake_insights, state)}
        result = run("run", "scim", "--max-drop", "0.5", env=env)

    assert result.returncode == 6, result.stderr
    assert (
        f"refusing to push: the drop guard cannot read its state file {state}"
    ) in result.stderr
    assert fake_insights.snapshot_attempts == 0
    assert state.read_bytes() == garbage


def test_state_file_naming_a_directory_is_a_configuration_error(
    fake_insights: FakeInsights, tmp_path: Path
) -> None:
    with FakeScim(flat_users(), flat_groups()) as fake:
        env = {**scim_at(fake.base_url), **insights_env(fake_insights)}
        result = run(
            "run", "scim", "--max-drop", "0.5", "--state-file", str(tmp_path), env=env
        )
        requests_made = list(fake.requests)

    assert result.returncode == 2, result.stderr
    assert f"the state file {tmp_path} cannot be written" in result.stderr
    assert requests_made == []
    assert fake_insights.snapshot_attempts == 0


# -- 12. Secrets an HTTP header cannot carry; UTF-8 Basic credentials ----------------


def test_bearer_token_outside_latin1_is_a_configuration_error(tmp_path: Path) -> None:
    with FakeScim(flat_users(), flat_groups()) as fake:
        env = scim_at(fake.base_url, password="token-with-€-sign")
        result = run("run", "scim", "--output", str(tmp_path / "out.json"), env=env)
        requests_made = list(fake.requests)

    assert result.returncode == 2, result.stderr
    assert "the bearer token has characters an HTTP header cannot carry" in (
        result.stderr
    )
    assert requests_made == []


def test_password_with_a_line_break_is_a_configuration_error(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("first-half\nsecond-half\n")
    with FakeScim(flat_users(), flat_groups()) as fake:
        env = scim_at(fake.base_url)
        del env["ELIMITY_SCIM_PASSWORD"]
        env["ELIMITY_SCIM_PASSWORD_FILE"] = str(secret)
        result = run("run", "scim", "--output", str(tmp_path / "out.json"), env=env)
        requests_made = list(fake.requests)

    assert result.returncode == 2, result.stderr
    assert "Password contains a line break or control character" in result.stderr
    assert "second-half" not in result.stderr
    assert requests_made == []


def test_basic_credentials_are_sent_as_utf8(tmp_path: Path) -> None:
    username, password = "jürgen", "pässwörd-ünï"
    expected = base64.b64encode(f"{username}:{password}".encode()).decode()
    serve = directory(flat_users(), flat_groups())

    def respond(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Basic {expected}":
            return json_reply(401, {"detail": "bad credentials"})
        return serve(seen)

    output = tmp_path / "snapshot.json"
    with TinyServer(respond) as server:
        env = {
            **scim_at(server.base_url, password=password),
            "ELIMITY_SCIM_USERNAME": username,
        }
        result = run("run", "scim", "--output", str(output), env=env)

    assert result.returncode == 0, result.stderr
    summary = summarize(json.loads(output.read_text()))
    assert set(summary.users) == {"u1", "u2", "u3"}
    assert password not in result.stderr


# -- 13. No terminal escape sequence reaches stderr -----------------------------------

ANSI = f"{ESC}[31mboom{ESC}[0m{ESC}]0;owned{chr(7)}"


def _scim_error(content_type: str, body: bytes, status: int = 400) -> Respond:
    def respond(seen: Seen) -> Reply:
        return status, {"Content-Type": content_type}, body

    return respond


def _insights_error(where: str) -> Respond:
    def respond(seen: Seen) -> Reply:
        if seen.path.endswith(where):
            return 400, {"Content-Type": "text/plain"}, f"rejected {ANSI}".encode()
        return 204, {}, b""

    return respond


@pytest.mark.parametrize(
    ("scim_respond", "insights_respond", "code"),
    [
        (_scim_error("application/scim+json", _dumps({"detail": ANSI})), None, 4),
        (_scim_error("text/plain", ANSI.encode()), None, 4),
        (_scim_error("application/json", _dumps({"detail": ANSI}), 401), None, 3),
        (None, _insights_error("/snapshots"), 5),
        (None, _insights_error("/connector-logs"), 0),
        (None, _insights_error(""), 5),
    ],
    ids=[
        "scim-json-detail",
        "scim-plain-text",
        "scim-401",
        "insights-snapshot",
        "insights-info-log",
        "insights-snapshot-and-alert",
    ],
)
def test_escape_sequences_in_error_bodies_never_reach_stderr(
    tmp_path: Path,
    scim_respond: Respond | None,
    insights_respond: Respond | None,
    code: int,
) -> None:
    with (
        TinyServer(scim_respond or directory(flat_users(), flat_groups())) as scim,
        TinyServer(insights_respond or _insights_error("/nowhere")) as insights,
    ):
        env = {
            **scim_at(scim.base_url, retryAttempts="1"),
            **insights_at(insights.url, tmp_path / "state.json"),
        }
        result = run("run", "scim", env=env)

    assert result.returncode == code, result.stderr
    assert "boom" in result.stderr or "rejected" in result.stderr
    assert ESC not in result.stderr
    assert chr(7) not in result.stderr
    for message in logged_messages(insights):
        assert ESC not in message


# -- 14. SIGTERM unwinds like Ctrl-C -----------------------------------------------


def test_sigterm_leaves_no_partial_output_and_exits_130(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    stall = Fault(action="stall", seconds=30, times=None)
    with FakeScim(flat_users(), flat_groups()) as fake:
        fake.fail(stall)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "ELIMITY_LOG_LEVEL": "DEBUG",
            **scim_at(fake.base_url, requestTimeout="60"),
        }
        process = subprocess.Popen(
            [CONNECTOR, "run", "scim", "--output", str(folder / "snapshot.json")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 15
            while not fake.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fake.requests, "the connector never reached the fake"
            during = sorted(p.name for p in folder.iterdir())
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()

    assert process.returncode == 130, stderr
    assert "interrupted; nothing was delivered" in stderr
    assert len(during) == 1
    assert during[0].endswith(".partial")
    assert list(folder.iterdir()) == []


# -- 15. Configuration errors up front -------------------------------------------------


@pytest.fixture
def scim_and_insights(
    fake_insights: FakeInsights, tmp_path: Path
) -> Iterator[tuple[FakeScim, dict[str, str]]]:
    with FakeScim(flat_users(), flat_groups()) as fake:
        env = {
            **scim_at(fake.base_url),
            **insights_env(fake_insights, tmp_path / "state.json"),
        }
        yield fake, env


@pytest.mark.parametrize(
    ("args", "change", "message"),
    [
        (
            (),
            {"ELIMITY_LOG_LEVEL": "LOUD"},
            "ELIMITY_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR",
        ),
        (
            (),
            {"ELIMITY_SCIM_BASE_URL": "https://127.0.0.1:99999/v2"},
            "Base URL has an invalid port: https://127.0.0.1:99999/v2",
        ),
        ((), {"INSIGHTS_URL_SUFFIX": "/api"}, "give the Insights URL without /api"),
        ((), {"INSIGHTS_URL_SUFFIX": "/api/"}, "give the Insights URL without /api"),
        (
            ("--push-timeout", "0"),
            {},
            "the push timeout must be 1 to 86400 seconds, not 0.0",
        ),
        (
            (),
            {"ELIMITY_PUSH_TIMEOUT": "0"},
            "the push timeout must be 1 to 86400 seconds, not '0'",
        ),
    ],
    ids=[
        "log-level",
        "port",
        "insights-api",
        "insights-api-slash",
        "push-timeout-flag",
        "push-timeout-env",
    ],
)
def test_configuration_errors_up_front(
    scim_and_insights: tuple[FakeScim, dict[str, str]],
    fake_insights: FakeInsights,
    args: tuple[str, ...],
    change: dict[str, str],
    message: str,
) -> None:
    fake, env = scim_and_insights
    env = {**env, **change}
    suffix = env.pop("INSIGHTS_URL_SUFFIX", "")
    env["ELIMITY_INSIGHTS_URL"] += suffix
    result = run("run", "scim", *args, env=env)

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert fake.requests == []
    assert fake_insights.snapshot_attempts == 0


# -- 3. A user's groups in another case, next to an RFC-spelled userName ---------

GROUPS_ONLY_ON_USERS = [
    group(f"g{n}", [member(f"u{m}") for m in range(n, 6)]) for n in range(3)
]


def _groups_only_on_users(fake: FakeScim) -> None:
    # Memberships show only on users: not in group lists, not by id, no filters.
    fake.user_groups = True
    fake.list_members = "omit"
    fake.get_members = "omit"
    fake.filter_users_by_group = False
    fake.filter_groups_by_member = False


def test_groups_attribute_in_another_case_is_read() -> None:
    # Before the fix, "Groups" was only looked for when userName was not spelled
    # as RFC 7643 spells it, so half of these memberships were dropped silently.
    users = [user(f"u{n}") for n in range(6)]
    expected = sorted(
        (f"u{m}", f"g{n}", "direct") for n in range(3) for m in range(n, 6)
    )

    with FakeScim(users, GROUPS_ONLY_ON_USERS) as fake:
        _groups_only_on_users(fake)
        fake.user_groups_key = "Groups"
        reading = read_fake(fake, "membershipStrategy=userGroups")
        detected = read_fake(fake)

    assert reading.relationships == expected
    assert detected.relationships == expected
    assert reading.attributes["g0"]["memberCount"] == 6


# -- 4. `check` agrees with `run` ----------------------------------------------------


def test_check_finds_memberships_shown_only_on_users() -> None:
    users = [user(f"u{n}") for n in range(6)]
    with FakeScim(users, GROUPS_ONLY_ON_USERS) as fake:
        _groups_only_on_users(fake)
        lines = list(ScimSource().check(read_options(fake.base_url)))
        reading = read_fake(fake)

    assert any(line.startswith("membership strategy: userGroups") for line in lines)
    assert len(reading.relationships) == 15


def test_check_pages_by_cursor_on_a_cursor_only_server() -> None:
    users = [user(f"u{n}") for n in range(6)]
    groups = [group("g0", [member("u0"), member("u1")])]
    with FakeScim(users, groups) as fake:
        fake.cursor_only = True
        assert fake.service_provider_config is not None
        fake.service_provider_config["pagination"] = {"cursor": True, "index": False}
        lines = list(ScimSource().check(read_options(fake.base_url)))
        listed = fake.list_requests()

    assert "paging: cursor mode" in lines[2]
    assert "users: 6" in lines
    assert all("startIndex" not in request.query for request in listed)
    assert {request.query.get("cursor") for request in listed} == {""}


# -- 5. urllib3's retry lines name URLs without their query -----------------------


def test_retry_warnings_carry_no_query_string(caplog: pytest.LogCaptureFixture) -> None:
    users = [user(f"u{n}") for n in range(3)]
    with FakeScim(users, [group("g0", [member("u0")])]) as fake:
        fake.fail(Fault(action="drop", path="/Users"))
        reading = read_fake(fake, "requestAttributes=true")

    assert sorted(reading.users) == ["u0", "u1", "u2"]
    retries = [r.getMessage() for r in caplog.records if "Retrying" in r.getMessage()]
    assert retries, "the dropped connection should have been retried"
    assert all("/scim/v2/Users" in line for line in retries)
    assert not any("?" in line or "count=" in line for line in retries)
