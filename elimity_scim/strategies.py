"""Ways to learn group memberships, and how to pick one from what a server returns.

Servers differ (SCIM-QUIRKS 7 to 9): most list ``members`` with each group, some
only when a group is read by id, some only in the users' ``groups`` attribute, and
some (AWS IAM Identity Center) only through filter queries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import islice
from urllib.parse import quote

from elimity_scim.client import JsonObject, Paging, ScimClient, resource_id_of
from elimity_scim.errors import ScimConnectorError
from elimity_scim.mapping import lowered
from elimity_scim.membership import Memberships

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "inline", "perGroup", "userGroups", "filter", "none")
_PROBES = 3
_UNSUPPORTED = (400, 403, 404, 501)
_IMPOSSIBLE = '"elimity-scim-probe-00000000-no-such-id"'


def detect_strategy(
    client: ScimClient,
    paging: Paging,
    memberships: Memberships,
    group_ids: Sequence[str],
) -> tuple[str, str]:
    """Return the strategy that finds memberships on this server, and why."""
    if not group_ids:
        return "inline", "the server lists no groups"
    carrying = sum(1 for group_id in group_ids if memberships.has_members(group_id))
    if carrying:
        return "inline", f"{carrying} of {len(group_ids)} listed groups carry members"
    for group_id in group_ids[:_PROBES]:
        group = client.get(group_path(group_id), end_statuses=(404,))
        if _members(group):
            return "perGroup", "groups carry members only when read by id"
    if memberships.user_groups_seen:
        return "userGroups", "the users' groups attribute names their groups"
    for group_id in group_ids[:_PROBES]:
        if _filter_finds(
            client, paging, "Users", f"groups.value eq {_quoted(group_id)}"
        ):
            return "filter", "only filter queries on users' groups find members"
    for user_id in islice(memberships.user_index, _PROBES):
        if _filter_finds(
            client, paging, "Groups", f"members.value eq {_quoted(user_id)}"
        ):
            return "filter", "only filter queries on groups' members find members"
    reason = (
        f"none of {len(group_ids)} groups carries members in the list or when read "
        "by id, no user names a group, and filter queries find no member"
    )
    return "none", reason


def read_memberships(
    client: ScimClient,
    paging: Paging,
    memberships: Memberships,
    group_ids: Sequence[str],
    strategy: str,
) -> None:
    """Fill ``memberships`` by the chosen strategy (``inline`` is filled already)."""
    if strategy == "perGroup":
        _per_group(client, memberships, group_ids)
    elif strategy == "userGroups":
        memberships.use_user_groups()
    elif strategy == "filter":
        _by_filter(client, paging, memberships, group_ids)


def group_path(group_id: str) -> str:
    """Return the path of one group, its id escaped for the URL."""
    return f"Groups/{quote(group_id, safe='')}"


def read_groups_by_id(
    client: ScimClient, memberships: Memberships, group_ids: Sequence[str]
) -> None:
    """Read each group by id and record its members."""
    _per_group(client, memberships, group_ids)


def _per_group(
    client: ScimClient, memberships: Memberships, group_ids: Sequence[str]
) -> None:
    def fetch(group_id: str) -> tuple[str, JsonObject | None]:
        return group_id, client.get(group_path(group_id), end_statuses=(404,))

    for group_id, group in client.map_ordered(fetch, group_ids):
        if group is None:
            # Deleted between listing and reading: keep it, without members.
            memberships.warnings.add("groups gone when read by id", group_id)
            continue
        for member in _members(group):
            memberships.add_member(group_id, member)


def _by_filter(
    client: ScimClient,
    paging: Paging,
    memberships: Memberships,
    group_ids: Sequence[str],
) -> None:
    # RFC 7644 §3.4.2.2 filters: ask per group for its users where the server
    # answers that, else per user for its groups. Nested groups stay unknown.
    # TODO: find nested groups too (members.value per group id) when a server
    # answers filters only; none seen so far supports it.
    if any(
        _filter_finds(client, paging, "Users", f"groups.value eq {_quoted(group_id)}")
        for group_id in group_ids[:_PROBES]
    ):

        def users_of(group_id: str) -> tuple[str, list[str]]:
            query = f"groups.value eq {_quoted(group_id)}"
            return group_id, _filtered(client, paging, "Users", query)

        for group_id, users in client.map_ordered(users_of, group_ids):
            for user in users:
                memberships.add_member(group_id, {"value": user, "type": "User"})
        return
    if _filter_count(client, paging, "Groups", f"members.value eq {_IMPOSSIBLE}"):
        msg = (
            f"{client.url('Groups')} ignores the filter parameter (a filter on an id "
            "that cannot exist returned groups), so memberships cannot be read by "
            "filter; choose another membershipStrategy"
        )
        raise ScimConnectorError(msg)
    listed = set(group_ids)

    def groups_of(user_id: str) -> tuple[str, list[str]]:
        query = f"members.value eq {_quoted(user_id)}"
        return user_id, _filtered(client, paging, "Groups", query)

    for user_id, groups in client.map_ordered(groups_of, memberships.user_id_list()):
        for group_id in groups:
            if group_id in listed:
                memberships.add_member(group_id, {"value": user_id, "type": "User"})


def _filtered(
    client: ScimClient, paging: Paging, endpoint: str, query: str
) -> list[str]:
    params = {"filter": query, "attributes": "id"}
    found = []
    for resource in client.iter_resources(endpoint, paging, params):
        resource_id = resource_id_of(resource)
        if resource_id is not None:
            found.append(resource_id)
    return found


def _filter_finds(
    client: ScimClient, paging: Paging, endpoint: str, query: str
) -> bool:
    # A server that ignores the filter parameter answers every filter with its
    # whole list, which would put every user in every group: a filter on an id that
    # cannot exist must then find nothing.
    if not _filter_count(client, paging, endpoint, query):
        return False
    attribute = query.partition(" ")[0]
    impossible = f"{attribute} eq {_IMPOSSIBLE}"
    if _filter_count(client, paging, endpoint, impossible):
        logger.warning("%s ignores the filter parameter", client.url(endpoint))
        return False
    return True


def _filter_count(client: ScimClient, paging: Paging, endpoint: str, query: str) -> int:
    # RFC 9865: a cursor-only server refuses startIndex, so probe the way it pages.
    paging_params: dict[str, str | int] = (
        {"cursor": "", "count": 1}
        if paging.mode == "cursor"
        else {"startIndex": 1, "count": 1}
    )
    params: dict[str, str | int] = {"filter": query, "attributes": "id"}
    params.update(paging_params)
    try:
        body = client.get(endpoint, params, end_statuses=_UNSUPPORTED)
    except ScimConnectorError as exc:
        logger.info("Filter probe on %s failed: %s", endpoint, exc)
        return 0
    raw = lowered(body or {}).get("resources")
    return len(raw) if isinstance(raw, list) else 0


def _members(group: JsonObject | None) -> list[object]:
    members = lowered(group or {}).get("members")
    return members if isinstance(members, list) else []


def _quoted(value: str) -> str:
    # RFC 7644 §3.4.2.2: string values are JSON strings.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
