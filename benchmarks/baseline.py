"""The straightforward importer: scim2-client, sequential, then reload_domain_graph.

What one would write with the established Python SCIM client (``scim2-client``,
sync API over httpx2) and ``elimity-insights-client``: read ServiceProviderConfig
for the page cap, list users then groups page by page (members from the group
list), map them onto entities and relationships with the same attributes as the
product's data model, and push everything with ``Client.reload_domain_graph``.

Prints one JSON line with the counts and the time of each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2
from elimity_insights_client import Client, Config, DomainGraph
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import (
    EnterpriseUser,
    Group,
    ListResponse,
    ResourceType,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    User,
)

from benchmarks.graph import GraphBuilder

UserModel = User[EnterpriseUser]


def pages(scim: SyncSCIMClient, model: Any, count: int) -> Iterator[list[Any]]:
    """Yield the resources of each page of a listing, by index paging."""
    start = 1
    while True:
        response = scim.query(
            model, query_parameters=SearchRequest(start_index=start, count=count)
        )
        assert isinstance(response, ListResponse)  # noqa: S101 - errors raise
        resources = response.resources or []
        if not resources:
            return
        yield resources
        start += len(resources)
        if response.total_results is not None and start > response.total_results:
            return


def user_attributes(user: Any) -> dict[str, object]:
    """Return the product's user attributes of a scim2-models user."""
    name = user.name
    emails = user.emails or []
    primary = [e.value for e in emails if e.primary and e.value]
    email = (primary or [e.value for e in emails if e.value] or [None])[0]
    ext = user[EnterpriseUser]
    manager = ext.manager if ext else None
    meta = user.meta
    return {
        "userName": user.user_name,
        "displayName": user.display_name,
        "givenName": name.given_name if name else None,
        "familyName": name.family_name if name else None,
        "formattedName": name.formatted if name else None,
        "title": user.title,
        "userType": user.user_type,
        "externalId": user.external_id,
        "preferredLanguage": user.preferred_language,
        "locale": user.locale,
        "timezone": user.timezone,
        "employeeNumber": ext.employee_number if ext else None,
        "costCenter": ext.cost_center if ext else None,
        "organization": ext.organization if ext else None,
        "division": ext.division if ext else None,
        "department": ext.department if ext else None,
        "managerId": manager.value if manager else None,
        "managerDisplayName": manager.display_name if manager else None,
        "active": user.active,
        "email": email,
        "created": meta.created if meta else None,
        "lastModified": meta.last_modified if meta else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--insights-url", required=True)
    parser.add_argument("--source-id", type=int, default=1)
    args = parser.parse_args(argv)
    token = os.environ.get("BENCH_SCIM_TOKEN", "bench-token")
    insights_token = os.environ.get("BENCH_INSIGHTS_TOKEN", "bench-insights-token")

    started = time.perf_counter()
    http = httpx2.Client(
        base_url=args.base_url.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
        trust_env=False,
    )
    provider = ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[
            ResourceType.from_resource(UserModel),
            ResourceType.from_resource(Group),
        ],
    )
    scim = SyncSCIMClient(http, provider=provider)
    config = scim.query(ServiceProviderConfig)
    assert isinstance(config, ServiceProviderConfig)  # noqa: S101 - errors raise
    count = (config.filter.max_results if config.filter else None) or 100

    builder = GraphBuilder()
    for page in pages(scim, UserModel, count):
        for user in page:
            name = user.display_name or user.user_name or user.id
            builder.add_user(user.id, name, user_attributes(user))
    users_done = time.perf_counter()
    for page in pages(scim, Group, count):
        for group in page:
            members = [(m.value, m.type or "User") for m in group.members or []]
            meta = group.meta
            attributes: dict[str, object] = {
                "displayName": group.display_name,
                "externalId": group.external_id,
                "created": meta.created if meta else None,
                "lastModified": meta.last_modified if meta else None,
            }
            builder.add_group(
                group.id, group.display_name or group.id, attributes, members
            )
    read_done = time.perf_counter()
    entities, relationships = builder.finish()
    mapped = time.perf_counter()

    insights = Client(
        Config(id=args.source_id, url=args.insights_url, token=insights_token)
    )
    insights.reload_domain_graph(
        DomainGraph(entities=entities, relationships=relationships)
    )
    pushed = time.perf_counter()
    http.close()
    summary = {
        "page_size": count,
        "entities": len(entities),
        "relationships": len(relationships),
        "read_users_s": round(users_done - started, 3),
        "read_groups_s": round(read_done - users_done, 3),
        "relationships_s": round(mapped - read_done, 3),
        "push_s": round(pushed - mapped, 3),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
