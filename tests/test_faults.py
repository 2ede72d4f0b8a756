"""Guarantee 1: whatever the SCIM server does, one correct snapshot or nothing.

A Hypothesis property draws a directory, a paging style, settings (concurrency 1
and higher), a schedule of faults (5xx and 429 answers, dropped connections,
stalls past the timeout, bodies cut short, invalid JSON or HTML, pages that skip,
repeat or shift resources, lying paging fields) and sometimes a schedule of changes
to the directory while it is read. It runs the real ``elimity-connector run scim``
(``cli.main`` in-process, with a controlled environment) against `FakeScim` and a
strict `FakeInsights`, and checks that the run either exits 0 having pushed a
correct reading, or exits 3 or 4 with one clear error line, an ``alert`` connector
log and no snapshot pushed.

A correct reading of a directory that did not change is exactly the directory;
a run whose faults all fit in the retry budget must succeed. Of a directory that
changed, the snapshot holds no entity twice, nothing that never existed, and only
memberships that existed at some moment between listed entities; an entity that
existed throughout may be missing only where index paging shifted under a deletion
(RFC 7644 §3.4.2.4 promises no snapshot isolation), and the report counts how often.

The default run draws ``DEFAULT_SCHEDULES`` schedules; Hypothesis stops at the
first violation and shrinks it. The long run (5,000 schedules, about 25 minutes on
2 cores) keeps going past violations and reports each kind with its smallest
schedule::

    FAULT_SCHEDULES=5000 FAULT_KEEP_GOING=1 pytest tests/test_faults.py -k schedules

Either run prints the counts (schedules, faults by kind drawn and applied,
outcomes, deletion shifts) at the end and writes them as JSON to
``fault-schedules.json`` in pytest's base temporary directory, or to the file
named by ``FAULT_REPORT``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elimity_scim.connector.cli import main
from tests.support.fake_insights import FakeInsights, Summary, summarize
from tests.support.fake_scim import (
    LIST_RESPONSE,
    REAL,
    FakeScim,
    Fault,
    Mutation,
    RecordedRequest,
    Resource,
    default_service_provider_config,
    group,
    member,
    scim_error,
    user,
)

DEFAULT_SCHEDULES = 300
SCHEDULES = int(os.environ.get("FAULT_SCHEDULES") or DEFAULT_SCHEDULES)
KEEP_GOING = os.environ.get("FAULT_KEEP_GOING") == "1"
TOKEN = "fault-schedule-bearer-token"
INSIGHTS_TOKEN = "fault-schedule-insights-token"
SOURCE_ID = 42
STALL_SECONDS = 1.5  # past requestTimeout=1
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) "
)

TRANSIENT = (
    "429",
    "500",
    "502",
    "503",
    "504",
    "drop",
    "truncate",
    "stall",
    "stall_body",
)
"""Faults a retry sees through."""
FATAL = ("bad_json", "html", "cut", "not_object", "retry_after_long", "401", "403")
"""Faults the connector cannot see through: a run they reach must fail."""
LIES = ("skip", "repeat", "shift_back", "shift_ahead", "empty_page", "400", "404")
"""Page lies: one per schedule, told once, and only where exact totals make them
detectable."""


# -- Schedules -------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    target: str
    after: int
    times: int | None
    retry_after: str | None = None


@dataclass(frozen=True)
class MutationSpec:
    kind: str
    at: int
    a: int
    b: int


@dataclass
class Schedule:
    users: list[Resource]
    groups: list[Resource]
    knobs: dict[str, Any]
    paging: str
    strategy: str
    page_size: int
    concurrency: int
    attempts: int
    faults: list[FaultSpec]
    mutations: list[MutationSpec]

    @property
    def retry_budget_holds(self) -> bool:
        """Every fault is transient, and all of them fit in one request's retries."""
        if any(spec.kind not in TRANSIENT for spec in self.faults):
            return False
        return sum(spec.times or 99 for spec in self.faults) <= self.attempts - 1


USER_SUFFIXES = ["", "x", "a.b", "Ü"]
GROUP_SUFFIXES = ["", " sp", "+1", "/s", "é", "%", "?q"]


@st.composite
def directories(draw: st.DrawFn) -> tuple[list[Resource], list[Resource]]:
    n_users = draw(st.integers(0, 12))
    n_groups = draw(st.integers(0, 6))
    user_ids = [f"u{i}-{draw(st.sampled_from(USER_SUFFIXES))}" for i in range(n_users)]
    group_ids = [
        f"g{i}{draw(st.sampled_from(GROUP_SUFFIXES))}" for i in range(n_groups)
    ]
    style = draw(st.sampled_from(["typed", "ref", "bare", "mixed"]))
    users = [
        user(
            uid,
            f"name-{uid}",
            **({"displayName": f"Display {uid}"} if draw(st.booleans()) else {}),
        )
        for uid in user_ids
    ]
    groups = []
    for index, gid in enumerate(group_ids):
        members = _subset(draw, user_ids, len(user_ids))
        children = _subset(draw, [g for g in group_ids if g != gid], 2)
        entries = [_member(u, "User", style, i) for i, u in enumerate(members)]
        entries += [_member(g, "Group", style, i) for i, g in enumerate(children)]
        if index == 0 and draw(st.booleans()):
            entries.append(member("ghost-1", "User"))  # dangling: dropped
        groups.append(group(gid, entries, displayName=f"Group {gid}"))
    return users, groups


def _subset(draw: st.DrawFn, pool: list[str], most: int) -> list[str]:
    if not pool:
        return []
    return draw(st.lists(st.sampled_from(pool), unique=True, max_size=most))


def _member(value: str, kind: str, style: str, index: int) -> dict[str, str]:
    if style == "mixed":
        style = ("typed", "ref", "bare")[index % 3]
    if style == "typed":
        return member(value, kind)
    if style == "ref":
        return member(value, None, f"https://scim.test/v2/{kind}s/{value}")
    return member(value)


WEIGHTS = {
    **{"429": 3, "500": 2, "502": 2, "503": 3, "504": 2, "drop": 3, "truncate": 3},
    **{"stall": 1, "stall_body": 2},  # a second each
    **{"bad_json": 1, "html": 1, "cut": 2, "not_object": 1, "retry_after_long": 1},
    **{"401": 1, "403": 1},
    **{"skip": 3, "repeat": 2, "shift_back": 2, "shift_ahead": 3, "empty_page": 3},
    **{"400": 1, "404": 1},
}
"""How often each kind of fault is drawn, relatively."""


def fault_specs(lies: bool, mutating: bool) -> st.SearchStrategy[FaultSpec]:
    allowed = (*TRANSIENT, *FATAL, *(LIES if lies and not mutating else ()))
    kinds = [kind for kind in allowed for _ in range(WEIGHTS[kind])]
    return st.sampled_from(kinds).flatmap(lambda kind: _fault_spec(kind))


def _fault_spec(kind: str) -> st.SearchStrategy[FaultSpec]:
    targets = ["/Users", "/Users", "/Groups", "/Groups", "by-id", "spc", "any"]
    after = [0, 0, 0, 1, 1, 2, 3, 5, 8]
    if kind in LIES:
        targets, after = ["/Users", "/Groups"], [0, 0, 1, 2, 3]
    times = st.sampled_from([1]) if kind in LIES else st.sampled_from([1, 1, 2, 3])
    if kind in FATAL:
        times = st.sampled_from([1, 2, None])
    retry_after = st.none()
    if kind in ("429", "503"):
        retry_after = st.sampled_from([None, None, "0", "1"])
    return st.builds(
        FaultSpec,
        kind=st.just(kind),
        target=st.sampled_from(targets),
        after=st.sampled_from(after),
        times=times,
        retry_after=retry_after,
    )


MUTATIONS = (
    "remove_user",
    "remove_group",
    "add_user",
    "move_user",
    "rename_user",
    "add_group",
    "nest",
)


def chance(draw: st.DrawFn, percent: int) -> bool:
    """True about ``percent`` % of the time.

    Hypothesis draws the ends of an integer range far more often than the rest,
    so the middle of the range decides.
    """
    return 25 <= draw(st.integers(0, 99)) < 25 + percent


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    users, groups = draw(directories())
    paging = draw(st.sampled_from(["index", "index", "unasked_cursor", "cursor"]))
    view, strategy = draw(
        st.sampled_from(
            [
                ("full", "auto"),
                ("full", "auto"),
                ("full", "inline"),
                ("omit", "inline"),
                ("empty", "perGroup"),
                ("full", "perGroup"),
            ]
        )
    )
    total = draw(st.sampled_from(["exact"] * 5 + ["page", "requested"]))
    total = "missing" if chance(draw, 10) else total
    delta = draw(st.sampled_from([0, 0, 0, -2, -1, 1, 2])) if total == "exact" else 0
    if total == "exact" and chance(draw, 5):
        delta = 10**15  # a quadrillion more resources claimed must cost nothing
    knobs: dict[str, Any] = {
        "list_members": view,
        "get_members": "full",
        "total_results": total,
        "total_results_delta": delta,
        "items_per_page": draw(st.sampled_from(["page", "requested", "missing"])),
        "numbers_as_strings": draw(st.booleans()),
        "start_index_echo": draw(st.sampled_from(["echo", "zero", "missing"])),
        "empty_resources": draw(st.sampled_from(["array", "omit", "null"])),
        "key_case": draw(st.sampled_from(["canonical", "lower", "upper"])),
        "beyond_end_status": draw(st.sampled_from([None, None, 400, 404])),
        "page_cap": draw(st.sampled_from([None, None, 1, 2, 3])),
        "ignore_start_index": chance(draw, 3),
    }
    mutating = chance(draw, 33)
    lies = total == "exact" and delta >= 0
    faults = draw(st.lists(fault_specs(lies, mutating), max_size=4))
    # One lie at most: the same lie told to both readings of a listing is
    # indistinguishable from a server that over-counts (README: "the same ids are
    # accepted with a warning").
    first_lie = next((spec for spec in faults if spec.kind in LIES), None)
    faults = [spec for spec in faults if spec.kind not in LIES or spec is first_lie]
    mutations: list[MutationSpec] = []
    if mutating:
        mutations = draw(
            st.lists(
                st.builds(
                    MutationSpec,
                    kind=st.sampled_from(MUTATIONS),
                    at=st.integers(2, 16),
                    a=st.integers(0, 50),
                    b=st.integers(0, 50),
                ),
                min_size=1,
                max_size=3,
            )
        )
    return Schedule(
        users=users,
        groups=groups,
        knobs=knobs,
        paging=paging,
        strategy=strategy,
        page_size=draw(st.integers(1, 5)),
        concurrency=draw(st.sampled_from([1, 2, 4])),
        attempts=draw(st.integers(2, 4)),
        faults=faults,
        mutations=mutations,
    )


# -- Building the fake -----------------------------------------------------------------


def _first_page(request: RecordedRequest) -> bool:
    return request.query.get("startIndex") == "1" or request.query.get("cursor") == ""


def build_fault(spec: FaultSpec) -> Fault:
    options: dict[str, Any] = {"after": spec.after, "times": spec.times}
    if spec.target in ("/Users", "/Groups"):
        options["path"] = spec.target
    elif spec.target == "spc":
        options["path"] = "/ServiceProviderConfig"
    elif spec.target == "by-id":
        options["when"] = lambda r: r.path.startswith("/Groups/")
    kind = spec.kind
    if kind in ("429", "500", "502", "503", "504"):
        headers = {"Retry-After": spec.retry_after} if spec.retry_after else {}
        return scim_error(int(kind), f"injected {kind}", headers=headers, **options)
    if kind == "retry_after_long":
        return Fault(status=429, headers={"Retry-After": "30"}, **options)
    if kind == "401":
        return Fault(
            status=401, body="Token revoked", content_type="text/plain", **options
        )
    if kind == "403":
        return scim_error(403, "Forbidden", **options)
    if kind in ("400", "404"):
        return scim_error(int(kind), f"injected {kind}", **options)
    if kind == "drop":
        return Fault(action="drop", **options)
    if kind in ("truncate", "cut"):
        return Fault(action=kind, body=REAL, **options)
    if kind == "stall":
        return Fault(action="stall", seconds=STALL_SECONDS, **options)
    if kind == "stall_body":
        return Fault(action="stall_body", body=REAL, seconds=STALL_SECONDS, **options)
    if kind == "bad_json":
        return Fault(status=200, body='{"Resources": [{"id": "u', **options)
    if kind == "html":
        body = "<html><body>Please sign in</body></html>"
        return Fault(status=200, body=body, content_type="text/html", **options)
    if kind == "not_object":
        return Fault(status=200, body="[]", **options)
    if kind == "skip":
        return Fault(action="skip", position=1, **options)
    if kind == "repeat":
        return Fault(action="repeat", **options)
    if kind in ("shift_back", "shift_ahead"):
        return Fault(action="shift", shift=-1 if kind == "shift_back" else 1, **options)
    if kind == "empty_page":
        later = options.pop("when", None)
        options["when"] = lambda r: not _first_page(r) and (later is None or later(r))
        body = {"schemas": [LIST_RESPONSE], "totalResults": 0, "Resources": []}
        return Fault(status=200, body=body, **options)
    msg = f"unknown fault kind {kind}"
    raise AssertionError(msg)


@dataclass
class Deletion:
    endpoint: str
    request_number: int
    after: set[str]
    """Ids listed after the deleted one: index paging may skip one of them."""


@dataclass
class Mutator:
    """Applies drawn `MutationSpec`s to a fake, remembering deletions."""

    deletions: list[Deletion] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    counter: int = 0

    def mutation(self, spec: MutationSpec) -> Mutation:
        return Mutation(change=lambda fake: self.apply(fake, spec), at=spec.at)

    def apply(self, fake: FakeScim, spec: MutationSpec) -> None:
        self.counter += 1
        users, groups = fake.users, fake.groups
        kind, a, b = spec.kind, spec.a, spec.b
        number = len(fake.requests)
        if kind == "add_user":
            new = user(f"n{self.counter}-new", f"new-{self.counter}")
            users.insert(a % (len(users) + 1), new)
            if groups and b % 2 == 0:
                groups[b % len(groups)]["members"].append(member(new["id"], "User"))
        elif kind == "remove_user" and users:
            index = a % len(users)
            gone = users.pop(index)["id"]
            self._deleted("/Users", number, users[index:])
            for entry in groups:
                entry["members"] = [
                    m for m in entry["members"] if m.get("value") != gone
                ]
        elif kind == "move_user" and users and groups:
            moving = users[a % len(users)]["id"]
            source = next(
                (
                    g
                    for g in groups
                    if any(m.get("value") == moving for m in g["members"])
                ),
                None,
            )
            if source is not None:
                source["members"] = [
                    m for m in source["members"] if m.get("value") != moving
                ]
            target = groups[b % len(groups)]
            if target is not source:
                target["members"].append(member(moving, "User"))
        elif kind == "rename_user" and users:
            users[a % len(users)]["displayName"] = f"Renamed {self.counter}"
        elif kind == "add_group":
            members = [member(users[b % len(users)]["id"], "User")] if users else []
            new = group(f"h{self.counter}-new", members)
            groups.insert(a % (len(groups) + 1), new)
        elif kind == "remove_group" and groups:
            index = a % len(groups)
            gone = groups.pop(index)["id"]
            self._deleted("/Groups", number, groups[index:])
            for entry in groups:
                entry["members"] = [
                    m for m in entry["members"] if m.get("value") != gone
                ]
        elif kind == "nest" and len(groups) > 1:
            parent, child = groups[a % len(groups)], groups[b % len(groups)]
            values = {m.get("value") for m in parent["members"]}
            if parent is not child and child["id"] not in values:
                parent["members"].append(member(child["id"], "Group"))
        else:
            return
        self.applied.append(kind)

    def _deleted(self, endpoint: str, number: int, rest: list[Resource]) -> None:
        self.deletions.append(Deletion(endpoint, number, {r["id"] for r in rest}))


def build_fake(schedule: Schedule, mutator: Mutator) -> FakeScim:
    fake = FakeScim(
        schedule.users, schedule.groups, bearer_token=TOKEN, **schedule.knobs
    )
    if schedule.paging == "unasked_cursor":
        fake.next_cursor_unasked = True
    elif schedule.paging == "cursor":
        fake.cursor_only = True
        config = default_service_provider_config()
        config["pagination"] = {"cursor": True, "index": False}
        fake.service_provider_config = config
    for spec in schedule.faults:
        fault = build_fault(spec)
        fault.kind = spec.kind  # type: ignore[attr-defined]  # for the report
        fake.fail(fault)
    fake.mutate(*(mutator.mutation(spec) for spec in schedule.mutations))
    return fake


# -- Running the command line in-process -----------------------------------------------


@dataclass
class Run:
    code: int
    stderr: str
    seconds: float

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if " ERROR " in line]


def run_cli(environ: dict[str, str], arguments: list[str]) -> Run:
    """Run ``elimity-connector`` in-process; restore the environment and logging."""
    saved = dict(os.environ)
    terminate = signal.getsignal(signal.SIGTERM)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    started = time.monotonic()
    try:
        for name in [n for n in os.environ if n.startswith("ELIMITY_")]:
            del os.environ[name]
        os.environ.update(environ)
        with contextlib.redirect_stderr(stream):
            code = main(arguments)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        signal.signal(signal.SIGTERM, terminate)
        root.handlers[:] = handlers
        root.setLevel(level)
    return Run(code, stream.getvalue(), time.monotonic() - started)


def push_environ(
    scim_url: str, insights: FakeInsights, state_file: Path, token: str = TOKEN
) -> dict[str, str]:
    """The environment of a run that reads ``scim_url`` and pushes to ``insights``."""
    return {
        "ELIMITY_SCIM_BASE_URL": scim_url,
        "ELIMITY_SCIM_PASSWORD": token,
        "ELIMITY_INSIGHTS_URL": insights.url,
        "ELIMITY_SOURCE_ID": str(SOURCE_ID),
        "ELIMITY_INSIGHTS_TOKEN": INSIGHTS_TOKEN,
        "ELIMITY_STATE_FILE": str(state_file),
    }


def run_arguments(*sets: str, extra: tuple[str, ...] = ()) -> list[str]:
    arguments = ["run", "scim", "--allow-empty", *extra]
    for setting in ("retryBackoffMs=0", "retryAfterMax=1", "requestTimeout=1", *sets):
        arguments += ["--set", setting]
    return arguments


def end_unknowable(schedule: Schedule) -> bool:
    """Whether a listing may end on an error status the connector cannot trust.

    Only after totalResults is reached does a 400 or 404 mean "complete" (README);
    a server that omits or over-states totalResults and answers 400 or 404 past
    the last page fails the run.
    """
    knobs = schedule.knobs
    unknown = knobs["total_results"] in ("missing", "requested") or (
        knobs["total_results"] == "exact" and knobs["total_results_delta"] > 0
    )
    return knobs["beyond_end_status"] is not None and unknown


def unseeable_faults(schedule: Schedule, fake: FakeScim) -> list[str]:
    """Faults applied to answers that a run must read, and cannot see through.

    Only with concurrency 1 is every answer read: concurrent windows past the end
    of a listing may be dropped unread. Filter probes may fail quietly, the
    ServiceProviderConfig is optional, a page cut short might have been a
    400 or 404 that ends a listing, and the probe of ``attributes=`` (the first
    request that carries it) falls back to whole users when it fails.
    """
    if schedule.concurrency != 1:
        return []
    probe = next(
        (r for r in fake.requests if r.path == "/Users" and "attributes" in r.query),
        None,
    )
    found = []
    for request, fault in fake.applied:
        if request is probe:
            continue
        kind = getattr(fault, "kind", "?")
        if kind == "cut" and schedule.knobs["beyond_end_status"] is not None:
            continue
        listing = (
            request.path in ("/Users", "/Groups") and "filter" not in request.query
        )
        if (kind in FATAL) and (listing or request.path.startswith("/Groups/")):
            found.append(f"{kind} at {request.path}")
    return found


def reset(insights: FakeInsights) -> None:
    insights.snapshots = []
    insights.logs = []
    insights.rejections = []
    insights.requests = []
    insights.snapshot_attempts = 0
    insights.fail_snapshots_with = None
    insights.fail_logs_with = None
    insights.drop_snapshots = False


def assert_clean_failure(run: Run, insights: FakeInsights) -> str:
    """One readable error line, an alert log, nothing pushed; return the error."""
    lines = run.stderr.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), run.stderr[-3000:]
    assert len(run.errors) == 1, run.stderr[-3000:]
    assert lines[-1] == run.errors[0]
    message = run.errors[0].split(": ", 1)[1]
    assert message.strip(), run.stderr[-3000:]
    assert "internal error" not in message
    assert TOKEN not in run.stderr
    assert insights.snapshot_attempts == 0
    assert insights.snapshots == []
    assert len(insights.logs) == 1, insights.logs
    (alert,) = insights.logs[0]
    assert alert["level"] == "alert"
    assert "nothing was pushed" in alert["message"]
    return message


# -- What a correct reading is ---------------------------------------------------------


@dataclass
class Truth:
    """Users, groups and memberships of one version of the directory."""

    users: dict[str, tuple[str, str]]
    """id → (userName, entity name)."""
    groups: dict[str, str]
    direct: set[tuple[str, str]]
    nesting: set[tuple[str, str]]
    """(child, parent)."""

    @classmethod
    def of(cls, users: list[Resource], groups: list[Resource]) -> Truth:
        names = {
            u["id"]: (u["userName"], u.get("displayName") or u["userName"])
            for u in users
        }
        group_names = {g["id"]: g["displayName"] for g in groups}
        direct, nesting = set(), set()
        for entry in groups:
            for value in (m.get("value") for m in entry["members"]):
                if value in names:
                    direct.add((value, entry["id"]))
                elif value in group_names:
                    nesting.add((value, entry["id"]))
        return cls(names, group_names, direct, nesting)


def indirect_of(
    direct: set[tuple[str, str]], nesting: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """(user, group) reached only through nested groups."""
    parents: dict[str, set[str]] = {}
    for child, parent in nesting:
        parents.setdefault(child, set()).add(parent)
    reached = set()
    for user_id, group_id in direct:
        stack, seen = [group_id], set()
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        reached |= {(user_id, ancestor) for ancestor in seen}
    return reached - direct


def read_back(summary: Summary) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    direct = {p for p, kind in summary.user_memberships.items() if kind == "direct"}
    indirect = {p for p, kind in summary.user_memberships.items() if kind == "indirect"}
    assert set(summary.user_memberships) == direct | indirect
    return direct, indirect


def check_consistent(summary: Summary) -> None:
    """What holds of any snapshot: closure and member counts agree with the edges."""
    direct, indirect = read_back(summary)
    assert indirect == indirect_of(direct, summary.group_memberships)
    for group_id, attributes in summary.groups.items():
        members = {u for u, g in direct if g == group_id}
        members |= {c for c, p in summary.group_memberships if p == group_id}
        assert attributes.get("memberCount") == len(members), group_id


def check_exact(summary: Summary, truth: Truth) -> None:
    assert set(summary.users) == set(truth.users)
    assert set(summary.groups) == set(truth.groups)
    for user_id, (user_name, name) in truth.users.items():
        assert summary.users[user_id]["userName"] == user_name
        assert summary.users[user_id]["name"] == name
    for group_id, name in truth.groups.items():
        assert summary.groups[group_id]["name"] == name
    direct, indirect = read_back(summary)
    assert direct == truth.direct
    assert summary.group_memberships == truth.nesting
    assert indirect == indirect_of(truth.direct, truth.nesting)


def check_changing(
    summary: Summary, versions: list[Truth], fake: FakeScim, mutator: Mutator
) -> int:
    """Check a reading of a changing directory; return the excused missing entities."""
    ever_users: dict[str, set[tuple[str, str]]] = {}
    ever_groups: dict[str, set[str]] = {}
    for version in versions:
        for user_id, names in version.users.items():
            ever_users.setdefault(user_id, set()).add(names)
        for group_id, name in version.groups.items():
            ever_groups.setdefault(group_id, set()).add(name)
    for user_id, attributes in summary.users.items():
        assert user_id in ever_users, f"user {user_id} never existed"
        pair = (attributes["userName"], attributes["name"])
        assert pair in ever_users[user_id], f"user {user_id} read as {pair}"
    for group_id, attributes in summary.groups.items():
        assert group_id in ever_groups, f"group {group_id} never existed"
        assert attributes["name"] in ever_groups[group_id]
    direct, _ = read_back(summary)
    ever_direct = set().union(*(t.direct for t in versions))
    ever_nesting = set().union(*(t.nesting for t in versions))
    assert direct <= ever_direct, direct - ever_direct
    assert summary.group_memberships <= ever_nesting
    always_direct = set.intersection(*(t.direct for t in versions))
    always_nesting = set.intersection(*(t.nesting for t in versions))
    for u, g in always_direct:
        if u in summary.users and g in summary.groups:
            assert (u, g) in direct, f"membership {u} → {g} existed throughout"
    for c, p in always_nesting:
        if c in summary.groups and p in summary.groups:
            assert (c, p) in summary.group_memberships, f"{c} → {p} throughout"

    excused = 0
    always_users = set.intersection(*(set(t.users) for t in versions))
    always_groups = set.intersection(*(set(t.groups) for t in versions))
    for endpoint, always, read in (
        ("/Users", always_users, summary.users),
        ("/Groups", always_groups, summary.groups),
    ):
        # RFC 7644 §3.4.2.4: index paging over a list that loses an entry before
        # the current position skips the entry after it.
        listings = [
            number
            for number, request in enumerate(fake.requests, 1)
            if request.path == endpoint
        ]
        for missing in sorted(always - set(read)):
            shifted = any(
                d.endpoint == endpoint
                and missing in d.after
                and any(n < d.request_number for n in listings)
                and any(n >= d.request_number for n in listings)
                for d in mutator.deletions
            )
            assert shifted, f"{endpoint[1:-1].lower()} {missing} existed throughout"
            excused += 1
    return excused


# -- The report ------------------------------------------------------------------------


@dataclass
class Report:
    schedules: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    drawn: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)
    settings: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    violations: dict[str, list[object]] = field(default_factory=dict)
    """Failed checks (``FAULT_KEEP_GOING=1``): kind → [count, smallest schedule]."""
    deletion_shift_runs: int = 0
    deletion_shift_entities: int = 0
    changing_runs: int = 0
    seconds: float = 0.0

    def violated(self, message: str, schedule: Schedule) -> None:
        kind = _reason(message.splitlines()[0] if message else "assertion failed")
        size = len(repr(schedule))
        entry = self.violations.setdefault(kind, [0, size, message, schedule])
        entry[0] = int(entry[0]) + 1  # type: ignore[call-overload]
        if size < int(entry[1]):  # type: ignore[call-overload]
            entry[1:] = [size, message, schedule]

    def as_dict(self) -> dict[str, object]:
        return {
            "schedules": self.schedules,
            "outcomes": dict(self.outcomes.most_common()),
            "faults_drawn": dict(self.drawn.most_common()),
            "faults_applied": dict(self.applied.most_common()),
            "settings": dict(sorted(self.settings.items())),
            "mutations_applied": dict(self.mutations.most_common()),
            "errors": dict(self.errors.most_common()),
            "runs_with_changes": self.changing_runs,
            "violations": {
                kind: {
                    "count": count,
                    "message": message[:3000],
                    "smallest": repr(example),
                }
                for kind, (count, _, message, example) in self.violations.items()
            },
            "deletion_shift_runs": self.deletion_shift_runs,
            "deletion_shift_missing_entities": self.deletion_shift_entities,
            "seconds_in_runs": round(self.seconds, 1),
        }


@pytest.fixture(scope="module")
def fault_report(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Report]:
    report = Report()
    yield report
    if not report.schedules:
        return
    target = os.environ.get("FAULT_REPORT")
    path = (
        Path(target)
        if target
        else tmp_path_factory.getbasetemp() / "fault-schedules.json"
    )
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    quiet = (
        capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    )
    summary = report.as_dict()
    summary["violations"] = {k: v[0] for k, v in report.violations.items()}
    with quiet:
        print(f"\nfault schedules: {json.dumps(summary)}\nreport: {path}")


@pytest.fixture(scope="module")
def insights() -> Iterator[FakeInsights]:
    with FakeInsights(source_id=SOURCE_ID, token=INSIGHTS_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-state")


# -- The property ----------------------------------------------------------------------


def _reason(message: str) -> str:
    """An error message without URLs and numbers, to count kinds of failure."""
    message = re.sub(r"https?://\S+", "URL", message)
    return re.sub(r"\d+", "N", message)[:160]


def run_schedule(
    schedule: Schedule, insights: FakeInsights, state_dir: Path, report: Report
) -> None:
    """Run one schedule, count it in the report, and check its outcome."""
    reset(insights)
    mutator = Mutator()
    fake = build_fake(schedule, mutator)
    arguments = run_arguments(
        f"pageSize={schedule.page_size}",
        f"concurrency={schedule.concurrency}",
        f"retryAttempts={schedule.attempts}",
        f"membershipStrategy={schedule.strategy}",
    )
    with fake:
        environ = push_environ(fake.base_url, insights, state_dir / "state.json")
        run = run_cli(environ, arguments)
    versions = [Truth.of(users, groups) for users, groups in fake.history]
    changed = len(versions) > 1
    truth = versions[0]
    # README: when no strategy finds a single member while groups exist, the run
    # fails rather than import every group as empty.
    memberless = (
        not changed and truth.groups and not any(g["members"] for g in schedule.groups)
    )
    may_fail = (
        changed
        or memberless
        or not schedule.retry_budget_holds
        or schedule.knobs["ignore_start_index"]
        or end_unknowable(schedule)
    )
    kind = "changing" if changed else "stable"
    report.schedules += 1
    report.seconds += run.seconds
    report.drawn.update(spec.kind for spec in schedule.faults)
    report.applied.update(getattr(f, "kind", "?") for _, f in fake.applied)
    report.settings.update(
        [f"concurrency={schedule.concurrency}", f"paging={schedule.paging}"]
    )
    report.mutations.update(mutator.applied)
    report.changing_runs += changed
    report.outcomes[
        f"exit {run.code}, {kind}, {'may' if may_fail else 'must'} pass"
    ] += 1

    context = f"exit {run.code}; stderr tail:\n{run.stderr[-2500:]}"
    assert run.code in (0, 3, 4), context
    assert insights.rejections == [], insights.rejections
    assert run.seconds < 60, context

    if run.code != 0:
        message = assert_clean_failure(run, insights)
        report.errors[f"{kind}: {_reason(message)}"] += 1
        if run.code == 3:
            auth = [
                r
                for r, f in fake.applied
                if f.status in (401, 403) and r.path != "/ServiceProviderConfig"
            ]
            assert auth, context
        assert may_fail, f"failed though every fault fits the retry budget: {message}"
        return

    assert not memberless, "groups without any member were imported"
    unseen = unseeable_faults(schedule, fake)
    assert not unseen, f"succeeded although these answers reached it: {unseen}"
    assert insights.snapshot_attempts == 1
    assert len(insights.snapshots) == 1
    assert len(insights.logs) == 1
    assert [log["level"] for log in insights.logs[0]] == ["info"]
    summary = summarize(insights.snapshots[0])
    check_consistent(summary)
    if not changed:
        check_exact(summary, truth)
        return
    excused = check_changing(summary, versions, fake, mutator)
    report.deletion_shift_runs += excused > 0
    report.deletion_shift_entities += excused


@settings(
    max_examples=SCHEDULES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(schedule=schedules())
def _every_schedule(
    schedule: Schedule, insights: FakeInsights, state_dir: Path, report: Report
) -> None:
    if not KEEP_GOING:
        run_schedule(schedule, insights, state_dir, report)
        return
    try:
        run_schedule(schedule, insights, state_dir, report)
    except AssertionError as exc:
        report.violated(str(exc), schedule)


def test_fault_schedules_give_a_correct_snapshot_or_a_clean_failure(
    insights: FakeInsights, state_dir: Path, fault_report: Report
) -> None:
    _every_schedule(insights=insights, state_dir=state_dir, report=fault_report)
    assert not fault_report.violations, json.dumps(
        fault_report.as_dict()["violations"], indent=2
    )


# -- The fake's new tricks -------------------------------------------------------------


def test_the_fake_edits_pages_and_keeps_every_version_of_the_directory() -> None:
    def ids() -> list[str]:
        query = {"startIndex": "2", "count": "2"}
        response = requests.get(f"{fake.base_url}/Users", params=query, timeout=5)
        return [resource["id"] for resource in response.json()["Resources"]]

    with FakeScim([user(f"u{n}") for n in range(1, 6)]) as fake:
        fake.fail(
            Fault(action="skip", position=1, path="/Users"),
            Fault(action="repeat", path="/Users"),
            Fault(action="shift", shift=-1, path="/Users"),
        )
        fake.mutate(Mutation(change=lambda f: f.users.pop(0), at=4))
        pages = [ids() for _ in range(5)]

    assert pages == [
        ["u2"],  # u3 skipped
        ["u2", "u2", "u3"],  # u2 repeated
        ["u1", "u2"],  # shifted back by one
        ["u3", "u4"],  # u1 deleted just before this request
        ["u3", "u4"],
    ]
    assert [fault.action for _, fault in fake.applied] == ["skip", "repeat", "shift"]
    assert [len(users) for users, _ in fake.history] == [5, 4]
    assert fake.mutations[0].request_number == 4


# -- The push --------------------------------------------------------------------------


class StallingInsights(FakeInsights):
    """A fake Insights that holds snapshot or log uploads, or both, unanswered."""

    def __init__(
        self, *, stall_snapshots: bool, stall_logs: bool, **options: Any
    ) -> None:
        super().__init__(**options)
        self.stall_snapshots = stall_snapshots
        self.stall_logs = stall_logs
        self.release = threading.Event()

    def _snapshot(self, content_type: str | None, body: bytes) -> None:
        if self.stall_snapshots:
            self.release.wait(60)
            return  # and forget it: the client gave up long ago
        super()._snapshot(content_type, body)

    def _logs(self, content_type: str | None, body: bytes) -> None:
        if self.stall_logs:
            self.release.wait(60)
        super()._logs(content_type, body)

    def stop(self) -> None:
        self.release.set()
        super().stop()


def _small_directory() -> FakeScim:
    users = [user("u1"), user("u2")]
    groups = [group("g1", [member("u1", "User"), member("u2", "User")])]
    return FakeScim(users, groups, bearer_token=TOKEN)


@pytest.mark.parametrize("failure", ["401", "wrong-token", "413", "500", "drop"])
def test_a_refused_push_exits_5_once(failure: str, tmp_path: Path) -> None:
    token = "another-insights-token" if failure == "wrong-token" else INSIGHTS_TOKEN
    with (
        _small_directory() as fake,
        FakeInsights(source_id=SOURCE_ID, token=token) as insights,
    ):
        if failure == "drop":
            insights.drop_snapshots = True
        elif failure != "wrong-token":
            insights.fail_snapshots_with = int(failure)
        environ = push_environ(fake.base_url, insights, tmp_path / "state.json")
        run = run_cli(environ, run_arguments())
        url = insights.url

    assert run.code == 5, run.stderr
    assert insights.snapshot_attempts == 1
    assert insights.snapshots == []
    assert len(run.errors) == 1
    assert run.stderr.splitlines()[-1] == run.errors[0]
    error = run.errors[0]
    assert f"{url}/api/sources/{SOURCE_ID}/snapshots" in error
    if failure == "drop":
        assert "could not push the snapshot" in error
    else:
        status = "401" if failure == "wrong-token" else failure
        assert "Insights refused the snapshot at" in error
        assert f"with status {status}" in error
    assert INSIGHTS_TOKEN not in run.stderr
    if failure == "wrong-token":
        assert insights.logs == []
        assert "could not send the alert to Insights" in run.stderr
    else:
        (logs,) = insights.logs
        assert [log["level"] for log in logs] == ["alert"]
        assert "the snapshot was not accepted" in logs[0]["message"]


def run_bounded(
    action: Callable[[], Run], limit: float, unblock: Callable[[], None]
) -> tuple[Run | None, float]:
    """Run ``action``; if it is still going after ``limit`` seconds, unblock it.

    The action runs in this (the main) thread, as the command line installs a
    signal handler; a timer thread does the unblocking, which must make the action
    end. Returns the run, or ``None`` when it needed unblocking, and its seconds.
    """
    fired = threading.Event()

    def cut_off() -> None:
        fired.set()
        unblock()

    timer = threading.Timer(limit, cut_off)
    timer.daemon = True
    started = time.monotonic()
    timer.start()
    try:
        run = action()
    finally:
        timer.cancel()
    elapsed = time.monotonic() - started
    return (None if fired.is_set() else run), elapsed


def _push_to_stalling_insights(
    tmp_path: Path, *, stall_snapshots: bool, stall_logs: bool
) -> tuple[Run | None, float, StallingInsights]:
    # Runs the CLI with a 1 s push timeout against an Insights that may not answer;
    # gives up on the run after 15 s (and then lets the stalled answers go).
    with (
        _small_directory() as fake,
        StallingInsights(
            stall_snapshots=stall_snapshots,
            stall_logs=stall_logs,
            source_id=SOURCE_ID,
            token=INSIGHTS_TOKEN,
        ) as insights,
    ):
        environ = push_environ(fake.base_url, insights, tmp_path / "state.json")
        arguments = run_arguments(extra=("--push-timeout", "1"))
        run, elapsed = run_bounded(
            lambda: run_cli(environ, arguments), 15, insights.release.set
        )
    return run, elapsed, insights


@pytest.mark.parametrize("stall_logs", [False, True], ids=["snapshot", "everything"])
def test_no_answer_within_the_push_timeout_exits_5(
    stall_logs: bool, tmp_path: Path
) -> None:
    run, elapsed, insights = _push_to_stalling_insights(
        tmp_path, stall_snapshots=True, stall_logs=stall_logs
    )

    assert run is not None, (
        f"still running {elapsed:.0f} s after a push timeout of 1 s: the connector "
        "waits without a timeout"
    )
    assert run.code == 5, run.stderr
    assert insights.snapshot_attempts == 1
    assert insights.snapshots == []
    assert "did not answer in time" in run.errors[0]


def test_a_connector_log_that_gets_no_answer_cannot_hang_the_run(
    tmp_path: Path,
) -> None:
    # The snapshot is accepted; the "info" connector log after it gets no answer.
    run, elapsed, insights = _push_to_stalling_insights(
        tmp_path, stall_snapshots=False, stall_logs=True
    )

    assert run is not None, (
        f"still running {elapsed:.0f} s after the snapshot was pushed: the "
        "connector log is sent without a timeout"
    )
    assert insights.snapshot_attempts == 1
    assert len(insights.snapshots) == 1


# -- Found by the schedules ------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/Users", "/Groups"])
def test_an_empty_first_page_that_claims_resources_is_not_an_empty_listing(
    endpoint: str, insights: FakeInsights, state_dir: Path
) -> None:
    # One hiccup: the first page says totalResults 2 (or 1) and brings nothing.
    # README: "A listing that ends with fewer resources than totalResults is read
    # a second time"; instead the listing is taken as empty, and the snapshot
    # would wipe every user (with --allow-empty) or every group from Insights.
    reset(insights)
    total = 2 if endpoint == "/Users" else 1
    body = {"schemas": [LIST_RESPONSE], "totalResults": total, "Resources": []}
    with _small_directory() as fake:
        fake.fail(Fault(status=200, body=body, path=endpoint, times=1))
        environ = push_environ(fake.base_url, insights, state_dir / "state.json")
        run = run_cli(environ, run_arguments())

    if run.code == 0:
        summary = insights.summary()
        assert set(summary.users) == {"u1", "u2"}
        assert set(summary.groups) == {"g1"}
    else:
        assert run.code == 4, run.stderr
        assert_clean_failure(run, insights)


def test_a_server_that_switches_to_cursors_cannot_shorten_the_listing(
    insights: FakeInsights, state_dir: Path
) -> None:
    # The first page (by index) says totalResults 4 and hands out a nextCursor;
    # the next page, by cursor, is empty, says totalResults 0 and ends the
    # listing. The 4 is forgotten on the switch to cursors, so two of four users
    # are pushed as the whole directory instead of reading the listing again.
    reset(insights)
    users = [user(f"u{n}") for n in range(1, 5)]
    body = {"schemas": [LIST_RESPONSE], "totalResults": 0, "Resources": []}
    with FakeScim(users, bearer_token=TOKEN, next_cursor_unasked=True) as fake:
        fake.fail(
            Fault(
                status=200,
                body=body,
                when=lambda r: bool(r.query.get("cursor")),
                times=1,
            )
        )
        environ = push_environ(fake.base_url, insights, state_dir / "state.json")
        run = run_cli(environ, run_arguments("pageSize=2"))

    if run.code == 0:
        assert set(insights.summary().users) == {"u1", "u2", "u3", "u4"}
    else:
        assert run.code == 4, run.stderr
        assert_clean_failure(run, insights)
