"""The SCIM source: the plugin the runner finds through its entry point."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from importlib.resources import files
from urllib.parse import urlsplit

from elimity_insights_client import Entity, Relationship

from elimity_scim.client import ClientSettings, Paging, ScimClient, resource_id_of
from elimity_scim.connector.errors import ConfigurationError
from elimity_scim.diagnostics import Warnings
from elimity_scim.mapping import group_entity, lowered, user_entity
from elimity_scim.membership import Memberships

logger = logging.getLogger(__name__)


class ScimSource:
    """Imports users, groups and memberships from a SCIM 2.0 service provider."""

    def manifest(self) -> dict[str, object]:
        """Return the manifest shipped with the package."""
        return _package_json("manifest.json")

    def data_model(self) -> dict[str, object]:
        """Return the Insights data model of the snapshots this source yields."""
        return _package_json("data_model.json")

    def read(self, options: Mapping[str, object]) -> Iterator[Entity | Relationship]:
        """Yield every user and group entity, then every membership."""
        warnings = Warnings()
        client = _client(options, warnings)
        try:
            yield from _read(client, warnings)
        finally:
            client.close()
        warnings.log(logger)


def _read(client: ScimClient, warnings: Warnings) -> Iterator[Entity | Relationship]:
    paging = client.paging(client.service_provider_config())
    logger.info(
        "Reading %s by %s paging, %d per page",
        client.base_url,
        paging.mode,
        paging.page_size,
    )
    memberships = Memberships(warnings)
    yield from _users(client, paging, memberships, warnings)
    groups = list(_groups(client, paging, memberships, warnings))
    for group_id, group in groups:
        count = memberships.member_count(group_id)
        yield group_entity(group_id, group, count, warnings)
    logger.info("Read %d groups", len(groups))
    yield from memberships.relationships(effective=True)


def _users(
    client: ScimClient, paging: Paging, memberships: Memberships, warnings: Warnings
) -> Iterator[Entity]:
    for resource in client.iter_resources("Users", paging):
        user_id = resource_id_of(resource)
        if user_id is None:
            continue
        memberships.add_user(user_id)
        yield user_entity(user_id, lowered(resource), warnings)
    logger.info("Read %d users", len(memberships.user_ids))


def _groups(
    client: ScimClient, paging: Paging, memberships: Memberships, warnings: Warnings
) -> Iterator[tuple[str, dict[str, object]]]:
    for resource in client.iter_resources("Groups", paging):
        group_id = resource_id_of(resource)
        if group_id is None:
            continue
        group = lowered(resource)
        members = group.pop("members", None)
        memberships.add_group(group_id)
        if isinstance(members, list):
            for member in members:
                memberships.add_member(group_id, member)
        elif members is not None:
            warnings.add("groups whose members are not a list, members skipped")
        yield group_id, group


def _client(options: Mapping[str, object], warnings: Warnings) -> ScimClient:
    base_url = str(options["baseUrl"])
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"Base URL must be an http:// or https:// URL: {base_url}"
        raise ConfigurationError(msg)
    if parts.username or parts.password:
        msg = "Base URL must not carry a username or password; use the options"
        raise ConfigurationError(msg)
    if parts.query or parts.fragment:
        msg = "Base URL must not have a query string or fragment"
        raise ConfigurationError(msg)
    username = options.get("username")
    settings = ClientSettings(
        timeout=float(_int(options, "requestTimeout")),
        page_size=_int(options, "pageSize"),
    )
    return ScimClient(
        base_url,
        username=str(username) if username else None,
        password=str(options["password"]),
        settings=settings,
        warnings=warnings,
    )


def _int(options: Mapping[str, object], key: str) -> int:
    value = options[key]
    if not isinstance(value, int):
        msg = f"setting {key} must be a whole number"
        raise ConfigurationError(msg)
    return value


def _package_json(name: str) -> dict[str, object]:
    text = files("elimity_scim").joinpath(name).read_text(encoding="utf-8")
    parsed: object = json.loads(text)
    if not isinstance(parsed, dict):
        msg = f"{name} in the package is not a JSON object"
        raise ConfigurationError(msg)
    return parsed
