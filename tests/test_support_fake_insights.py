"""The fake Insights accepts what the real client sends and refuses the rest."""

from __future__ import annotations

import datetime
import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from elimity_insights_client import (
    AttributeAssignment,
    BooleanValue,
    Client,
    Config,
    ConnectorLog,
    DateTime,
    DateTimeValue,
    DateValue,
    DomainGraph,
    Entity,
    Level,
    NumberValue,
    Relationship,
    StringValue,
    TimeValue,
    Value,
)

from tests.conftest import INSIGHTS_SOURCE_ID, INSIGHTS_TOKEN
from tests.support.fake_insights import (
    DATA_MODEL_PATH,
    FakeInsights,
    load_data_model,
    summarize,
)

AUTH = (str(INSIGHTS_SOURCE_ID), INSIGHTS_TOKEN)
# Every value type, for the tests that need more than the project's data model.
ALL_TYPES_MODEL = {
    "entityTypes": [
        {"id": "user", "singular": "User", "plural": "Users", "icon": "person"},
        {"id": "group", "singular": "Group", "plural": "Groups", "icon": "group"},
    ],
    "entityAttributeTypes": [
        {"entityTypeId": "user", "id": attribute, "type": kind, "name": attribute}
        for attribute, kind in [
            ("b", "boolean"),
            ("n", "number"),
            ("s", "string"),
            ("d", "date"),
            ("dt", "dateTime"),
            ("t", "time"),
        ]
    ],
    "relationshipTypes": [{"fromEntityTypeId": "user", "toEntityTypeId": "group"}],
    "relationshipAttributeTypes": [
        {"parentType": "user", "childType": "group", "id": "membershipType"}
        | {"type": "string", "name": "Membership type"}
    ],
}


def _client(fake: FakeInsights, **config: Any) -> Client:
    settings = {"id": INSIGHTS_SOURCE_ID, "url": fake.url, "token": INSIGHTS_TOKEN}
    return Client(Config(**(settings | config)))


def _a(attribute: str, value: Value) -> AttributeAssignment:
    return AttributeAssignment(attribute_type_id=attribute, value=value)


def _user(user_id: str, *assignments: AttributeAssignment) -> Entity:
    return Entity(
        attribute_assignments=list(assignments), id=user_id, name=user_id, type="user"
    )


def _group(group_id: str) -> Entity:
    return Entity(attribute_assignments=[], id=group_id, name="G", type="group")


def _member(
    user_id: str, group_id: str, *assignments: AttributeAssignment
) -> Relationship:
    return Relationship(
        attribute_assignments=list(assignments),
        from_entity_id=user_id,
        from_entity_type="user",
        to_entity_id=group_id,
        to_entity_type="group",
    )


def _nesting(child: str, parent: str) -> Relationship:
    return Relationship(
        attribute_assignments=[],
        from_entity_id=child,
        from_entity_type="group",
        to_entity_id=parent,
        to_entity_type="group",
    )


def _raw_snapshot(fake: FakeInsights, body: bytes, **headers: str) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"} | headers
    return requests.post(
        f"{fake.url}/api/sources/{INSIGHTS_SOURCE_ID}/snapshots",
        data=body,
        headers=headers,
        auth=AUTH,
        timeout=10,
    )


def _compressed(value: object) -> bytes:
    return zlib.compress(json.dumps(value).encode())


VALID = {
    "entities": [
        {"attributeAssignments": [], "id": "u1", "name": "U", "type": "user"},
        {"attributeAssignments": [], "id": "g1", "name": "G", "type": "group"},
    ],
    "relationships": [
        {
            "attributeAssignments": [],
            "fromEntityId": "u1",
            "toEntityId": "g1",
            "fromEntityType": "user",
            "toEntityType": "group",
        }
    ],
}


@pytest.fixture
def all_types_fake() -> Iterator[FakeInsights]:
    with FakeInsights(token=INSIGHTS_TOKEN, data_model=ALL_TYPES_MODEL) as fake:
        yield fake


# -- What the real client sends is accepted ----------------------------------------


def test_real_client_snapshot_is_accepted_and_summarized(
    fake_insights: FakeInsights,
) -> None:
    graph = DomainGraph(
        entities=iter(
            [
                _user(
                    "u1",
                    _a("userName", StringValue("zoë@example.test")),
                    _a("active", BooleanValue(True)),
                    _a("lastModified", DateTimeValue(DateTime(2024, 2, 29, 23, 59, 1))),
                ),
                _user("u2"),
                Entity(
                    attribute_assignments=[_a("memberCount", NumberValue(2))],
                    id="g1",
                    name="日本",
                    type="group",
                ),
                _group("g2"),
            ]
        ),
        relationships=iter(
            [
                _member("u1", "g1", _a("membershipType", StringValue("direct"))),
                _member("u2", "g1"),
                _nesting("g2", "g1"),
            ]
        ),
    )

    _client(fake_insights).reload_domain_graph(graph)

    assert fake_insights.rejections == []
    assert fake_insights.snapshot_attempts == 1
    summary = summarize(fake_insights.snapshots[0])
    assert summary.users == {
        "u1": {
            "name": "u1",
            "userName": "zoë@example.test",
            "active": True,
            "lastModified": datetime.datetime(
                2024, 2, 29, 23, 59, 1, tzinfo=datetime.UTC
            ),
        },
        "u2": {"name": "u2"},
    }
    assert summary.groups == {
        "g1": {"name": "日本", "memberCount": 2},
        "g2": {"name": "G"},
    }
    assert summary.user_memberships == {("u1", "g1"): "direct", ("u2", "g1"): None}
    assert summary.group_memberships == {("g2", "g1")}
    assert fake_insights.summary() == summary


def test_every_value_type_and_history_timestamp_is_accepted(
    all_types_fake: FakeInsights,
) -> None:
    entity = _user(
        "u1",
        _a("b", BooleanValue(False)),
        _a("n", NumberValue(-1.5)),
        _a("s", StringValue("")),
        _a("d", DateValue(2024, 2, 29)),
        _a("dt", DateTimeValue(DateTime(1999, 12, 31, 0, 0, 0))),
        _a("t", TimeValue(23, 59, 59)),
    )
    timestamp = DateTime(2024, 1, 2, 3, 4, 5)

    _client(all_types_fake).reload_domain_graph(
        DomainGraph(entities=[entity], relationships=[], timestamp=timestamp)
    )

    snapshot = all_types_fake.latest
    assert snapshot is not None
    assert snapshot["historyTimestamp"] == {
        "year": 2024,
        "month": 1,
        "day": 2,
        "hour": 3,
        "minute": 4,
        "second": 5,
    }
    assert summarize(snapshot).users["u1"] == {
        "name": "u1",
        "b": False,
        "n": -1.5,
        "s": "",
        "d": datetime.date(2024, 2, 29),
        "dt": datetime.datetime(1999, 12, 31, tzinfo=datetime.UTC),
        "t": datetime.time(23, 59, 59),
    }


def test_a_reload_replaces_the_previous_snapshot(fake_insights: FakeInsights) -> None:
    client = _client(fake_insights)
    client.reload_domain_graph(DomainGraph(entities=[_user("a")], relationships=[]))
    client.reload_domain_graph(DomainGraph(entities=[_user("b")], relationships=[]))

    assert len(fake_insights.snapshots) == 2
    assert fake_insights.summary().users == {"b": {"name": "b"}}


def test_empty_graph_is_accepted(fake_insights: FakeInsights) -> None:
    _client(fake_insights).reload_domain_graph(
        DomainGraph(entities=[], relationships=[])
    )
    assert fake_insights.latest == {"entities": [], "relationships": []}


def test_real_client_logs_are_accepted(fake_insights: FakeInsights) -> None:
    brussels = datetime.timezone(datetime.timedelta(hours=2))
    logs = [
        ConnectorLog(Level.INFO, "Imported 3 users", datetime.datetime(2024, 5, 6)),
        ConnectorLog(
            Level.ALERT,
            "Import failed",
            datetime.datetime(2024, 5, 6, 7, 8, 9, 123, tzinfo=brussels),
        ),
    ]
    client = _client(fake_insights)

    client.create_connector_logs(logs)
    client.create_connector_logs([])

    assert len(fake_insights.logs) == 2
    first, second = fake_insights.logs
    assert [(log["level"], log["message"]) for log in first] == [
        ("info", "Imported 3 users"),
        ("alert", "Import failed"),
    ]
    assert first[1]["timestamp"] == "2024-05-06T07:08:09.000123+02:00"
    assert second == []


def test_real_client_reads_the_data_model(fake_insights: FakeInsights) -> None:
    schema = _client(fake_insights).get_domain_graph_schema()
    assert {entity_type.id for entity_type in schema.entity_types} == {"user", "group"}
    assert fake_insights.data_model == json.loads(DATA_MODEL_PATH.read_text())
    assert load_data_model() == fake_insights.data_model


def test_old_custom_sources_prefix_is_accepted(fake_insights: FakeInsights) -> None:
    response = requests.post(
        f"{fake_insights.url}/api/custom-sources/42/snapshots",
        data=_compressed(VALID),
        headers={"Content-Type": "application/octet-stream"},
        auth=AUTH,
        timeout=10,
    )
    assert response.status_code == 204
    assert response.content == b""
    assert fake_insights.latest == VALID


def test_stream_items_of_the_js_client_are_accepted(
    fake_insights: FakeInsights,
) -> None:
    body = {
        "entities": [],
        "relationships": [],
        "streamItems": [
            {"type": "entity", "entity": entity} for entity in VALID["entities"]
        ]
        + [{"type": "relationship", "relationship": VALID["relationships"][0]}],
    }
    assert _raw_snapshot(fake_insights, _compressed(body)).status_code == 204
    assert fake_insights.summary().user_memberships == {("u1", "g1"): None}


# -- What Insights would refuse is refused -----------------------------------------


@pytest.mark.parametrize(
    ("graph", "reason"),
    [
        (
            DomainGraph([_user("u", _a("active", StringValue("yes")))], []),
            "attribute type is boolean, value type is 'string'",
        ),
        (
            DomainGraph([_user("u", _a("memberCount", NumberValue(1)))], []),
            "entity type 'user' has no attribute type 'memberCount'",
        ),
        (
            DomainGraph(
                [Entity(attribute_assignments=[], id="r", name="r", type="role")], []
            ),
            "undeclared entity type 'role'",
        ),
        (
            DomainGraph([_user("u1"), _group("g1")], [_member("u1", "g2")]),
            "no group entity with id 'g2'",
        ),
        (
            DomainGraph([_user("u1"), _group("g1")], [_member("u9", "g1")]),
            "no user entity with id 'u9'",
        ),
        (
            DomainGraph([_user("u1"), _user("u1")], []),
            "duplicate user id 'u1'",
        ),
        (
            DomainGraph(
                [
                    _user(
                        "u1",
                        _a("title", StringValue("a")),
                        _a("title", StringValue("b")),
                    )
                ],
                [],
            ),
            "attribute 'title' is assigned twice",
        ),
        (
            DomainGraph(
                [_user("u1"), _group("g1")],
                [_member("u1", "g1"), _member("u1", "g1")],
            ),
            "duplicate relationship 'u1' → 'g1'",
        ),
        (
            DomainGraph(
                [_group("g1"), _user("u1")],
                [
                    Relationship(
                        attribute_assignments=[],
                        from_entity_id="g1",
                        from_entity_type="group",
                        to_entity_id="u1",
                        to_entity_type="user",
                    )
                ],
            ),
            "undeclared relationship type 'group' → 'user'",
        ),
        (
            DomainGraph(
                [_group("g1"), _group("g2")],
                [
                    Relationship(
                        attribute_assignments=[
                            _a("membershipType", StringValue("direct"))
                        ],
                        from_entity_id="g2",
                        from_entity_type="group",
                        to_entity_id="g1",
                        to_entity_type="group",
                    )
                ],
            ),
            "relationship type 'group' → 'group' has no attribute type",
        ),
        (DomainGraph([_user("")], []), "id: expected a non-empty string"),
        (
            DomainGraph(
                [
                    _user(
                        "u",
                        _a(
                            "lastModified",
                            DateTimeValue(DateTime(2023, 2, 29, 0, 0, 0)),
                        ),
                    )
                ],
                [],
            ),
            "dateTime out of range",
        ),
        (
            DomainGraph([_user("u")], [], timestamp=DateTime(2024, 1, 1, 24, 0, 0)),
            "historyTimestamp: dateTime out of range",
        ),
        (
            DomainGraph([_user("u", _a("active", BooleanValue(None)))], []),  # type: ignore[arg-type]
            "null is not a valid boolean",
        ),
    ],
    ids=[
        "wrong-value-type",
        "undeclared-attribute",
        "unknown-entity-type",
        "dangling-relationship-target",
        "dangling-relationship-source",
        "duplicate-entity",
        "repeated-attribute",
        "duplicate-relationship",
        "undeclared-relationship-type",
        "undeclared-relationship-attribute",
        "empty-id",
        "impossible-date",
        "bad-history-timestamp",
        "null-boolean",
    ],
)
def test_invalid_snapshots_from_the_client_are_refused(
    fake_insights: FakeInsights, graph: DomainGraph, reason: str
) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        _client(fake_insights).reload_domain_graph(graph)

    assert caught.value.response.status_code == 400
    assert reason in caught.value.response.text
    assert fake_insights.rejections == [caught.value.response.text]
    assert fake_insights.snapshots == []
    assert fake_insights.latest is None


@pytest.mark.parametrize(
    ("entity", "reason"),
    [
        (_user("u", _a("d", DateValue(2024, 13, 1))), "date out of range"),
        (_user("u", _a("t", TimeValue(12, 60, 0))), "time out of range"),
        (_user("u", _a("n", NumberValue(True))), "true is not a valid number"),
        (_user("u", _a("s", StringValue(5))), "5 is not a valid string"),  # type: ignore[arg-type]
    ],
    ids=["month-13", "minute-60", "bool-as-number", "int-as-string"],
)
def test_out_of_range_values_are_refused(
    all_types_fake: FakeInsights, entity: Entity, reason: str
) -> None:
    with pytest.raises(requests.HTTPError, match="400") as caught:
        _client(all_types_fake).reload_domain_graph(DomainGraph([entity], []))
    assert reason in caught.value.response.text


def test_lenient_mode_accepts_what_only_strict_mode_refuses() -> None:
    graph = DomainGraph(
        [
            _user("u1"),
            _user("u1", _a("title", StringValue("a")), _a("title", StringValue("b"))),
        ],
        [_member("u1", "nowhere"), _member("u1", "nowhere")],
    )
    with FakeInsights(token=INSIGHTS_TOKEN, strict=False) as fake:
        _client(fake).reload_domain_graph(graph)
        assert fake.rejections == []
        assert len(fake.snapshots) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (gzip.compress(json.dumps(VALID).encode()), "not a zlib stream"),
        (json.dumps(VALID).encode(), "not a zlib stream"),
        (_compressed(VALID)[:-5], "truncated zlib stream"),
        (_compressed(VALID) + b"x", "data after the end"),
        (zlib.compress(b"\xff\xfe"), "not UTF-8"),
        (zlib.compress(b"{"), "not JSON"),
        (zlib.compress(b'{"entities": [], "entities": []}'), "duplicate JSON key"),
        (
            zlib.compress(b'{"entities": [], "relationships": [], "x": NaN}'),
            "NaN is not JSON",
        ),
        (_compressed([]), "expected a JSON object"),
        (_compressed({"entities": []}), "missing keys ['relationships']"),
        (
            _compressed(VALID | {"extra": 1}),
            "unexpected keys ['extra']",
        ),
        (
            _compressed(
                {
                    "entities": [VALID["entities"][0] | {"attributes": []}],
                    "relationships": [],
                }
            ),
            "entities[0]: missing keys [], unexpected keys ['attributes']",
        ),
        (
            _compressed(
                {"entities": [{"id": "u", "type": "user"}], "relationships": []}
            ),
            "missing keys ['attributeAssignments', 'name']",
        ),
        (
            _compressed({"Entities": [], "Relationships": []}),
            "missing keys ['entities', 'relationships']",
        ),
        (
            _compressed(VALID | {"historyTimestamp": {"year": 2024}}),
            "historyTimestamp: missing keys",
        ),
        (
            _compressed(
                {
                    "entities": [VALID["entities"][0] | {"id": 7}],
                    "relationships": [],
                }
            ),
            "id: expected a non-empty string, got 7",
        ),
    ],
    ids=[
        "gzip",
        "uncompressed",
        "truncated",
        "trailing-data",
        "not-utf8",
        "not-json",
        "duplicate-key",
        "nan",
        "array",
        "no-relationships",
        "extra-top-level-key",
        "extra-record-key",
        "missing-record-keys",
        "pascal-case",
        "short-history-timestamp",
        "numeric-id",
    ],
)
def test_malformed_snapshot_bodies_are_refused(
    fake_insights: FakeInsights, body: bytes, reason: str
) -> None:
    response = _raw_snapshot(fake_insights, body)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")
    assert reason in response.text
    assert fake_insights.latest is None


def test_snapshot_needs_octet_stream(fake_insights: FakeInsights) -> None:
    response = _raw_snapshot(
        fake_insights, _compressed(VALID), **{"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "Content-Type must be application/octet-stream" in response.text


# -- Authentication and routing -------------------------------------------------------


def test_wrong_token_is_refused(fake_insights: FakeInsights) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        _client(fake_insights, token="wrong").reload_domain_graph(DomainGraph([], []))
    assert caught.value.response.status_code == 401
    assert caught.value.response.headers["WWW-Authenticate"].startswith("Basic")
    assert fake_insights.snapshot_attempts == 1
    assert fake_insights.latest is None


def test_unknown_source_is_not_found(fake_insights: FakeInsights) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        _client(fake_insights, id=43).create_connector_logs([])
    assert caught.value.response.status_code == 404
    assert fake_insights.logs == []


@pytest.mark.parametrize(
    "auth",
    [None, ("43", INSIGHTS_TOKEN), ("42", "")],
    ids=["none", "username-is-not-the-path-id", "empty-password"],
)
def test_basic_credentials_must_match_the_path(
    fake_insights: FakeInsights, auth: tuple[str, str] | None
) -> None:
    response = requests.post(
        f"{fake_insights.url}/api/sources/42/snapshots",
        data=_compressed(VALID),
        headers={"Content-Type": "application/octet-stream"},
        auth=auth,
        timeout=10,
    )
    assert response.status_code == 401


def test_bearer_token_is_not_accepted(fake_insights: FakeInsights) -> None:
    response = requests.get(
        f"{fake_insights.url}/api/sources/42/domain-graph-schema",
        headers={"Authorization": f"Bearer {INSIGHTS_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/sources/42/snapshots", 405),
        ("POST", "/api/sources/42/domain-graph-schema", 405),
        ("POST", "/api/sources/42/other", 404),
        ("POST", "/sources/42/snapshots", 404),
        ("POST", "//api/sources/42/snapshots", 404),
    ],
)
def test_unknown_routes(
    fake_insights: FakeInsights, method: str, path: str, status: int
) -> None:
    response = requests.request(
        method, f"{fake_insights.url}{path}", auth=AUTH, timeout=10
    )
    assert response.status_code == status


# -- Logs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logs", "reason"),
    [
        ({"level": "info"}, "expected a JSON array"),
        (
            [
                {
                    "level": "warning",
                    "message": "m",
                    "timestamp": "2024-05-06T07:08:09+00:00",
                }
            ],
            "is not info or alert",
        ),
        (
            [{"level": "info", "message": "m", "timestamp": "2024-05-06T07:08:09"}],
            "has no UTC offset",
        ),
        (
            [{"level": "info", "message": "m", "timestamp": "yesterday"}],
            "not an ISO-8601",
        ),
        (
            [{"level": "info", "message": 3, "timestamp": "2024-05-06T07:08:09Z"}],
            "message: expected a string",
        ),
        ([{"level": "info", "message": "m"}], "missing keys ['timestamp']"),
    ],
    ids=[
        "object",
        "level",
        "naive-timestamp",
        "not-a-timestamp",
        "message",
        "missing-key",
    ],
)
def test_invalid_logs_are_refused(
    fake_insights: FakeInsights, logs: object, reason: str
) -> None:
    response = requests.post(
        f"{fake_insights.url}/api/sources/42/connector-logs",
        data=json.dumps(logs),
        headers={"Content-Type": "application/json"},
        auth=AUTH,
        timeout=10,
    )
    assert response.status_code == 400
    assert reason in response.text
    assert fake_insights.logs == []


def test_logs_need_json_content_type(fake_insights: FakeInsights) -> None:
    response = requests.post(
        f"{fake_insights.url}/api/sources/42/connector-logs",
        data=b"[]",
        headers={"Content-Type": "application/octet-stream"},
        auth=AUTH,
        timeout=10,
    )
    assert response.status_code == 400


# -- Fault knobs ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 413, 401])
def test_snapshot_failures_can_be_injected(
    fake_insights: FakeInsights, status: int
) -> None:
    fake_insights.fail_snapshots_with = status
    client = _client(fake_insights)

    for _ in range(2):
        with pytest.raises(requests.HTTPError) as caught:
            client.reload_domain_graph(DomainGraph([_user("u")], []))
        assert caught.value.response.status_code == status
    client.create_connector_logs([])

    assert fake_insights.snapshot_attempts == 2
    assert fake_insights.snapshots == []
    assert fake_insights.rejections == []
    assert fake_insights.logs == [[]]

    fake_insights.fail_snapshots_with = None
    client.reload_domain_graph(DomainGraph([_user("u")], []))
    assert fake_insights.snapshot_attempts == 3


def test_dropped_snapshots_look_like_a_connection_error(
    fake_insights: FakeInsights,
) -> None:
    fake_insights.drop_snapshots = True
    with pytest.raises(requests.ConnectionError):
        _client(fake_insights).reload_domain_graph(DomainGraph([_user("u")], []))
    assert fake_insights.snapshot_attempts == 1
    assert fake_insights.snapshots == []


def test_log_failures_can_be_injected(fake_insights: FakeInsights) -> None:
    fake_insights.fail_logs_with = 500
    with pytest.raises(requests.HTTPError, match="500"):
        _client(fake_insights).create_connector_logs([])


def test_summarize_refuses_an_attribute_called_name() -> None:
    snapshot = {
        "entities": [
            {
                "attributeAssignments": [
                    {
                        "attributeTypeId": "name",
                        "value": {"type": "string", "value": "x"},
                    }
                ],
                "id": "u",
                "name": "u",
                "type": "user",
            }
        ],
        "relationships": [],
    }
    with pytest.raises(ValueError, match="called 'name'"):
        summarize(snapshot)


def test_url_is_bare_and_the_port_is_released() -> None:
    with FakeInsights() as fake:
        url = fake.url
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith("/")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/sources/42/domain-graph-schema", timeout=10)
