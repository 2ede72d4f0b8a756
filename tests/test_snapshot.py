import json
import sys
import zlib
from collections.abc import Iterator

import pytest
import simplejson
from elimity_insights_client import (
    AttributeAssignment,
    BooleanValue,
    DateTime,
    DateTimeValue,
    DateValue,
    DomainGraph,
    Entity,
    NumberValue,
    Relationship,
    StringValue,
    TimeValue,
)
from elimity_insights_client._elimity_insights_client import (  # reference encoder
    _encode_domain_graph,
)

from elimity_scim.connector.contract import Item
from elimity_scim.connector.delivery import (
    InsightsTarget,
    _compressor,
    push_snapshot,
    split_items,
)
from elimity_scim.connector.errors import SnapshotError
from elimity_scim.connector.snapshot import (
    SnapshotValidator,
    encode_snapshot,
    validated,
)
from tests.support.fake_insights import FakeInsights

MODEL = {
    "entityTypes": [
        {"id": "user", "singular": "User", "plural": "Users", "icon": "person"},
        {"id": "thing", "singular": "Thing", "plural": "Things", "icon": "label"},
    ],
    "entityAttributeTypes": [
        {"entityTypeId": "user", "id": "b", "type": "boolean", "archived": False},
        {"entityTypeId": "user", "id": "n", "type": "number", "archived": False},
        {"entityTypeId": "user", "id": "s", "type": "string", "archived": False},
        {"entityTypeId": "user", "id": "d", "type": "date", "archived": False},
        {"entityTypeId": "user", "id": "dt", "type": "dateTime", "archived": False},
        {"entityTypeId": "user", "id": "t", "type": "time", "archived": False},
    ],
    "relationshipTypes": [{"fromEntityTypeId": "user", "toEntityTypeId": "thing"}],
    "relationshipAttributeTypes": [
        {
            "parentType": "user",
            "childType": "thing",
            "id": "r",
            "type": "string",
            "archived": False,
        }
    ],
}


def _a(attribute: str, value: object) -> AttributeAssignment:
    return AttributeAssignment(attribute_type_id=attribute, value=value)  # type: ignore[arg-type]


def _items() -> list[Item]:
    everything = [
        _a("b", BooleanValue(False)),
        _a("n", NumberValue(99)),
        _a("s", StringValue('Zoë "quoted" \\ 日本 \n \U0001f600 \x00')),
        _a("d", DateValue(year=2024, month=2, day=29)),
        _a(
            "dt",
            DateTimeValue(
                DateTime(year=2023, month=1, day=2, hour=3, minute=4, second=5)
            ),
        ),
        _a("t", TimeValue(hour=23, minute=59, second=1)),
    ]
    return [
        Entity(attribute_assignments=everything, id="u1", name="Ünïcode", type="user"),
        Entity(
            attribute_assignments=[_a("n", NumberValue(1.5))],
            id="u2",
            name="",
            type="user",
        ),
        Entity(attribute_assignments=[], id="x", name="thing", type="thing"),
        Relationship(
            attribute_assignments=[_a("r", StringValue("direct"))],
            from_entity_id="u1",
            from_entity_type="user",
            to_entity_id="x",
            to_entity_type="thing",
        ),
        Relationship(
            attribute_assignments=[],
            from_entity_id="u2",
            from_entity_type="user",
            to_entity_id="x",
            to_entity_type="thing",
        ),
    ]


def _client_text(items: list[Item]) -> str:
    entities, relationships = split_items(items)
    graph = DomainGraph(entities=entities, relationships=relationships)
    encoder = simplejson.JSONEncoder(iterable_as_array=True)
    return "".join(encoder.iterencode(_encode_domain_graph(graph)))


@pytest.mark.parametrize("count", [0, 1, 3, 5])
def test_encoding_equals_the_clients_text(count: int) -> None:
    items = _items()[:count]
    chunks: list[str] = []
    encode_snapshot(iter(items), chunks.append, SnapshotValidator(MODEL))
    ours = "".join(chunks)
    assert ours == _client_text(items)
    assert json.loads(ours) == json.loads(_client_text(items))


@pytest.mark.parametrize("compressor", ["isal", "zlib"])
def test_pushed_body_is_the_clients_text(
    compressor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upload is the client's exact JSON text in a zlib stream (RFC 1950),
    # whether ISA-L or zlib (where no isal wheel exists) compresses it.
    if compressor == "zlib":
        monkeypatch.setitem(sys.modules, "isal", None)  # import fails
    expected_module = "isal" if compressor == "isal" else "zlib"
    assert type(_compressor()).__module__.startswith(expected_module)
    items = _items()
    with FakeInsights(token="t", data_model=MODEL) as fake:
        target = InsightsTarget(url=fake.url, source_id=fake.source_id, token="t")
        size = push_snapshot(target, iter(items), SnapshotValidator(MODEL), timeout=10)
        [body] = fake.bodies
    assert size == len(body)
    text = zlib.decompress(body).decode("ascii")
    assert text == _client_text(items)
    assert json.loads(text) == json.loads(_client_text(items))


def test_many_entities_cross_batches() -> None:
    items: list[Item] = [
        Entity(attribute_assignments=[], id=str(n), name=f"n{n}", type="user")
        for n in range(1300)
    ]
    chunks: list[str] = []
    encode_snapshot(iter(items), chunks.append, SnapshotValidator(MODEL))
    assert "".join(chunks) == _client_text(items)
    assert (
        zlib.decompress(zlib.compress("".join(chunks).encode())).count(b'"id"') == 1300
    )


def test_validator_counts_and_accepts_a_valid_stream() -> None:
    validator = SnapshotValidator(MODEL)
    assert len(list(validated(_items(), validator))) == 5
    assert validator.counts.entities == {"user": 2, "thing": 1}
    assert validator.counts.relationships == {("user", "thing"): 2}
    assert (
        validator.counts.describe(MODEL)
        == "2 Users, 1 Things, 2 relationships (user→thing 2)"
    )


def _entity(
    *assignments: AttributeAssignment, id_: str = "u", type_: str = "user"
) -> Entity:
    return Entity(attribute_assignments=list(assignments), id=id_, name="n", type=type_)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([_entity(type_="robot")], "undeclared type 'robot'"),
        ([_entity(id_="")], "empty or non-string id"),
        ([_entity(), _entity()], "user 'u' appears twice"),
        ([_entity(_a("zz", StringValue("x")))], "undeclared attribute 'zz'"),
        ([_entity(_a("b", StringValue("true")))], "invalid boolean value for 'b'"),
        ([_entity(_a("n", NumberValue(float("nan"))))], "invalid number value"),
        (
            [_entity(_a("s", StringValue("a")), _a("s", StringValue("b")))],
            "assigns attribute 's' twice",
        ),
        (
            [_entity(_a("d", DateValue(year=2020, month=13, day=1)))],
            "invalid date value",
        ),
        (
            [
                _entity(),
                Relationship(
                    attribute_assignments=[],
                    from_entity_id="u",
                    from_entity_type="user",
                    to_entity_id="missing",
                    to_entity_type="thing",
                ),
            ],
            "ends at an entity the snapshot does not hold",
        ),
        (
            [
                _entity(),
                Relationship(
                    attribute_assignments=[],
                    from_entity_id="u",
                    from_entity_type="user",
                    to_entity_id="u",
                    to_entity_type="user",
                ),
            ],
            "has an undeclared type",
        ),
    ],
)
def test_validator_rejects(items: list[Item], message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        list(validated(items, SnapshotValidator(MODEL)))


def test_entity_after_relationship_is_rejected() -> None:
    items = _items()
    items.append(_entity(id_="late"))
    with pytest.raises(SnapshotError, match="after the first relationship"):
        list(validated(items, SnapshotValidator(MODEL)))


def test_split_items_is_lazy() -> None:
    pulled: list[str] = []

    def stream() -> Iterator[Item]:
        for item in _items():
            pulled.append(type(item).__name__)
            yield item

    entities, relationships = split_items(stream())
    assert pulled == []
    assert [e.id for e in entities] == ["u1", "u2", "x"]
    assert pulled == ["Entity", "Entity", "Entity", "Relationship"]
    assert [r.from_entity_id for r in relationships] == ["u1", "u2"]
