"""The reference cost: the CPU that decoding the input and encoding the output takes.

1. Fetch every page body the connector reads (``ServiceProviderConfig``'s page cap,
   users then groups), untimed, with the server's ``X-Bench-Prefetch`` header so
   that neither latency nor the concurrency limit applies.
2. Timed: ``json.loads`` of every body (stdlib; each result dropped, as a
   streaming reader would).
3. Untimed: map the decoded resources onto the same entities and relationships as
   the connector and the baseline (``benchmarks.graph``), then ``gc.freeze()`` them
   so that collections during encoding do not walk the built graph.
4. Timed: elimity-insights-client's own encoding and compression of that graph,
   through the private helpers ``reload_domain_graph`` calls:
   ``list(_compress_domain_graph(_encode_domain_graph(graph)))``. The client then
   joins the compressed chunks byte by byte (``bytes(chain.from_iterable(...))``);
   that join is timed separately and is *not* part of the reference cost.
5. Untimed: POST the compressed body to the sink, so that the harness can check it
   holds the same graph as the connector's.

reference cost = CPU time of step 2 + CPU time of step 4 (``time.process_time``);
with ``--repeat K`` steps 2 and 4 are each timed K times and the medians are used.
Prints one JSON line with each part, CPU and wall.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from itertools import chain
from typing import Any

import requests
from elimity_insights_client import DomainGraph
from elimity_insights_client._elimity_insights_client import (
    _compress_domain_graph,
    _encode_domain_graph,
)

from benchmarks.graph import GraphBuilder

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def fetch_pages(
    session: requests.Session, base_url: str, endpoint: str, count: int
) -> list[bytes]:
    """Return every page body of a listing (index paging, as the connector asks)."""
    bodies = []
    start = 1
    while True:
        response = session.get(
            f"{base_url}/{endpoint}",
            params={"startIndex": start, "count": count},
            timeout=120,
        )
        response.raise_for_status()
        body = response.content
        page = json.loads(body)
        resources = page.get("Resources") or []
        if not resources:
            return bodies
        bodies.append(body)
        start += len(resources)
        if start > page.get("totalResults", 0):
            return bodies


def decode_all(bodies: list[bytes]) -> None:
    """Decode every body with the stdlib, dropping each result."""
    for body in bodies:
        json.loads(body)


def _timed(function: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = function()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _date(raw: object) -> datetime | None:
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def _user_attributes(user: dict[str, Any]) -> dict[str, object]:
    name = user.get("name") or {}
    emails = user.get("emails") or []
    primary = [e["value"] for e in emails if e.get("primary") and e.get("value")]
    email = (primary or [e["value"] for e in emails if e.get("value")] or [None])[0]
    ext = user.get(ENTERPRISE) or {}
    manager = ext.get("manager") or {}
    meta = user.get("meta") or {}
    return {
        "userName": user.get("userName"),
        "displayName": user.get("displayName"),
        "givenName": name.get("givenName"),
        "familyName": name.get("familyName"),
        "formattedName": name.get("formatted"),
        "title": user.get("title"),
        "userType": user.get("userType"),
        "externalId": user.get("externalId"),
        "preferredLanguage": user.get("preferredLanguage"),
        "locale": user.get("locale"),
        "timezone": user.get("timezone"),
        "employeeNumber": ext.get("employeeNumber"),
        "costCenter": ext.get("costCenter"),
        "organization": ext.get("organization"),
        "division": ext.get("division"),
        "department": ext.get("department"),
        "managerId": manager.get("value"),
        "managerDisplayName": manager.get("displayName"),
        "active": user.get("active"),
        "email": email,
        "created": _date(meta.get("created")),
        "lastModified": _date(meta.get("lastModified")),
    }


def build_graph(user_pages: list[bytes], group_pages: list[bytes]) -> DomainGraph:
    """Map the decoded pages onto entities and relationships."""
    builder = GraphBuilder()
    for body in user_pages:
        for user in json.loads(body)["Resources"]:
            name = user.get("displayName") or user.get("userName") or user["id"]
            builder.add_user(user["id"], name, _user_attributes(user))
    for body in group_pages:
        for group in json.loads(body)["Resources"]:
            meta = group.get("meta") or {}
            members = [
                (m["value"], m.get("type") or "User") for m in group.get("members", [])
            ]
            attributes: dict[str, object] = {
                "displayName": group.get("displayName"),
                "externalId": group.get("externalId"),
                "created": _date(meta.get("created")),
                "lastModified": _date(meta.get("lastModified")),
            }
            name = group.get("displayName") or group["id"]
            builder.add_group(group["id"], name, attributes, members)
    entities, relationships = builder.finish()
    return DomainGraph(entities=entities, relationships=relationships)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--insights-url", help="POST the result here (untimed)")
    parser.add_argument("--source-id", type=int, default=1)
    parser.add_argument(
        "--repeat", type=int, default=1, help="time each part this often (median)"
    )
    args = parser.parse_args(argv)
    base_url = args.base_url.rstrip("/")

    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = "Bearer bench-token"
    session.headers["X-Bench-Prefetch"] = "1"
    spc = session.get(f"{base_url}/ServiceProviderConfig", timeout=60).json()
    count = int((spc.get("filter") or {}).get("maxResults") or 100)
    user_pages = fetch_pages(session, base_url, "Users", count)
    group_pages = fetch_pages(session, base_url, "Groups", count)
    bodies = user_pages + group_pages

    decodes = []
    for _ in range(args.repeat):
        gc.collect()
        _, cpu, wall = _timed(lambda: decode_all(bodies))
        decodes.append((cpu, wall))
    gc.collect()

    graph = build_graph(user_pages, group_pages)
    gc.collect()
    gc.freeze()

    encodes = []
    chunks: list[bytes] = []
    for _ in range(args.repeat):
        chunks.clear()
        chunks, cpu, wall = _timed(
            lambda: list(_compress_domain_graph(_encode_domain_graph(graph)))
        )
        encodes.append((cpu, wall))
    compressed = chunks
    body, join_cpu, join_wall = _timed(lambda: bytes(chain.from_iterable(compressed)))
    decode_cpu = statistics.median(cpu for cpu, _ in decodes)
    decode_wall = statistics.median(wall for _, wall in decodes)
    encode_cpu = statistics.median(cpu for cpu, _ in encodes)
    encode_wall = statistics.median(wall for _, wall in encodes)

    if args.insights_url:
        response = session.post(
            f"{args.insights_url.rstrip('/')}/api/sources/{args.source_id}/snapshots",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            auth=(str(args.source_id), "bench-insights-token"),
            timeout=600,
        )
        response.raise_for_status()
    summary = {
        "page_size": count,
        "pages": len(bodies),
        "page_bytes": sum(map(len, bodies)),
        "decode_cpu_s": round(decode_cpu, 3),
        "decode_wall_s": round(decode_wall, 3),
        "encode_compress_cpu_s": round(encode_cpu, 3),
        "encode_compress_wall_s": round(encode_wall, 3),
        "client_join_cpu_s": round(join_cpu, 3),
        "client_join_wall_s": round(join_wall, 3),
        "reference_cpu_s": round(decode_cpu + encode_cpu, 3),
        "repeat": args.repeat,
        "decode_cpu_all_s": [round(cpu, 3) for cpu, _ in decodes],
        "encode_compress_cpu_all_s": [round(cpu, 3) for cpu, _ in encodes],
        "compressed_bytes": len(body),
        "pid": os.getpid(),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
