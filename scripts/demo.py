"""Demo: import an invented organisation from a real SCIM server into Insights.

Starts scim2-server on 127.0.0.1 with 300 invented users and 36 groups (nested
groups, a nesting cycle and two members that point at nothing), and a fake
Elimity Insights that checks every upload like the real one. Then runs

    elimity-connector run scim --insights-url URL --source-id 42

with the SCIM URL, the bearer token and the Insights token in the environment
only, and shows what arrived in Insights. Run it from the repository root:

    python scripts/demo.py
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.directory import SeededDirectory, example_directory  # noqa: E402
from tests.support.fake_insights import FakeInsights, Summary  # noqa: E402
from tests.support.scim2 import Scim2Server  # noqa: E402

SOURCE_ID = 42
USERS, GROUPS, DANGLING = 300, 36, 2
TIMEOUT_SECONDS = 600
EXAMPLES = 3
USER_COLUMNS = ["userName", "email", "active", "title", "department", "managerId"]
GROUP_COLUMNS = ["memberCount", "externalId"]


def main() -> int:
    connector = Path(sys.executable).parent / "elimity-connector"
    if not connector.exists():
        print(
            f"{connector} does not exist: install this project into the "
            "environment of this Python first (pip install -e .)",
            file=sys.stderr,
        )
        return 2

    bearer_token = secrets.token_urlsafe(24)
    insights_token = secrets.token_urlsafe(24)
    directory = example_directory(users=USERS, groups=GROUPS, dangling=DANGLING)
    with (
        Scim2Server(bearer_tokens=[bearer_token]) as scim,
        FakeInsights(source_id=SOURCE_ID, token=insights_token) as insights,
    ):
        seeded = scim.seed(directory)
        print(f"SCIM server     {scim.base_url} (bearer token auth)")
        print(f"  {_describe_seeded(seeded)}")
        print(f"Fake Insights   {insights.url} (source {SOURCE_ID})")
        print()

        command = [
            str(connector),
            "run",
            "scim",
            "--insights-url",
            insights.url,
            "--source-id",
            str(SOURCE_ID),
        ]
        environment = _environment(
            ELIMITY_SCIM_BASE_URL=scim.base_url,
            ELIMITY_SCIM_PASSWORD=bearer_token,
            ELIMITY_INSIGHTS_TOKEN=insights_token,
        )
        print("$ " + " ".join(command), flush=True)
        try:
            result = subprocess.run(
                command, env=environment, check=False, timeout=TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            print(f"\nThe connector did not finish within {TIMEOUT_SECONDS} s.")
            return 1
        print()
        return _report(result.returncode, insights, seeded)


def _environment(**variables: str) -> dict[str, str]:
    """The demo's own settings; other ELIMITY_* variables of the shell would
    change what the connector does (a username, a token file), so drop them."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ELIMITY_") or key == "ELIMITY_LOG_LEVEL"
    }
    return inherited | variables


def _describe_seeded(seeded: SeededDirectory) -> str:
    return (
        f"{len(seeded.users)} users, {len(seeded.groups)} groups, "
        f"{len(seeded.user_memberships)} direct user memberships, "
        f"{len(seeded.group_memberships)} nested groups, "
        f"{len(seeded.dangling)} members that point at nothing"
    )


def _report(status: int, insights: FakeInsights, seeded: SeededDirectory) -> int:
    print(f"Connector exit status: {status}")
    for reason in insights.rejections:
        print(f"  Insights refused a request: {reason}")
    for batch in insights.logs:
        for log in batch:
            print(f"Connector log [{log['level']}]: {log['message']}")

    if insights.latest is None:
        print("Nothing arrived in Insights.")
        return 1
    summary = insights.summary()
    _print_summary(summary, seeded)
    if status != 0:
        return status
    return 0 if summary.users or summary.groups else 1


def _print_summary(summary: Summary, seeded: SeededDirectory) -> None:
    kinds = Counter(summary.user_memberships.values())
    kind_text = ", ".join(
        f"{count} {kind}" for kind, count in sorted(kinds.items(), key=str)
    )
    print("Insights received:")
    print(f"  {len(summary.users)} users, {len(summary.groups)} groups")
    print(f"  {len(summary.user_memberships)} user → group memberships ({kind_text})")
    print(f"  {len(summary.group_memberships)} group → group memberships")

    direct = {
        pair
        for pair, kind in summary.user_memberships.items()
        if kind in ("direct", None)
    }
    checks = [
        ("users", set(summary.users) == set(seeded.users)),
        ("groups", set(summary.groups) == set(seeded.groups)),
        ("direct memberships", direct == seeded.user_memberships),
        ("nested groups", summary.group_memberships == seeded.group_memberships),
    ]
    for name, same in checks:
        print(f"  {name} match the SCIM server: {'yes' if same else 'NO'}")

    print("\nExample users:")
    users = sorted(summary.users.items(), key=lambda item: str(item[1]["name"]))
    non_ascii = [item for item in users if not str(item[1]["name"]).isascii()]
    for user_id, attributes in (non_ascii[:1] + users)[:EXAMPLES]:
        print(f"  {_row(user_id, attributes, USER_COLUMNS)}")
    print("Example groups:")
    groups = sorted(
        summary.groups.items(), key=lambda item: -_number(item[1].get("memberCount"))
    )
    for group_id, attributes in groups[:EXAMPLES]:
        print(f"  {_row(group_id, attributes, GROUP_COLUMNS)}")
    print("Example memberships:")
    memberships = sorted(summary.user_memberships.items())
    for (user_id, group_id), kind in memberships[:EXAMPLES]:
        user = summary.users.get(user_id, {}).get("name", user_id)
        group = summary.groups.get(group_id, {}).get("name", group_id)
        print(f"  {user} → {group} ({kind or 'no membership type'})")


def _row(entity_id: str, attributes: dict[str, object], columns: list[str]) -> str:
    values = "  ".join(
        f"{column}={attributes[column]}" for column in columns if column in attributes
    )
    return f"{attributes['name']} [{entity_id}]  {values}"


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    sys.exit(main())
