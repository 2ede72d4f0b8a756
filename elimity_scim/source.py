"""The SCIM source: the plugin the runner finds through its entry point."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib.resources import files
from urllib.parse import urlsplit

from elimity_insights_client import Entity, Relationship

from elimity_scim.client import (
    ClientSettings,
    JsonObject,
    Paging,
    RequestStats,
    ScimClient,
    resource_id_of,
)
from elimity_scim.connector.errors import ConfigurationError
from elimity_scim.connector.http import is_loopback
from elimity_scim.diagnostics import Warnings
from elimity_scim.errors import ScimAuthError, ScimConnectorError, ScimRequestError
from elimity_scim.mapping import (
    ENTERPRISE_USER,
    group_entity,
    lowered,
    lowered_get,
    user_entity,
    user_groups,
)
from elimity_scim.membership import Memberships
from elimity_scim.prefetch import Params
from elimity_scim.strategies import (
    STRATEGIES,
    detect_strategy,
    read_groups_by_id,
    read_memberships,
)

logger = logging.getLogger(__name__)

_EXCLUDE_MEMBERS = {"excludedAttributes": "members"}
# Every user attribute that mapping.user_entity and _note_user_groups read; "id" is
# returned whatever is asked (RFC 7643 §3.1: returned "always").
USER_ATTRIBUTES = ",".join(
    (
        "userName",
        "displayName",
        "name",
        "title",
        "userType",
        "externalId",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "emails",
        "groups",
        "meta",
        *(
            f"{ENTERPRISE_USER}:{name}"
            for name in (
                "employeeNumber",
                "costCenter",
                "organization",
                "division",
                "department",
                "manager",
            )
        ),
    )
)
# Answers to a narrowed request that mean the server does not take attributes=.
_REFUSALS = (400, 401, 403, 404, 501)
_PROBE_USERS = 50
_ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:error"
_NARROWED = "narrowed with attributes="
_REFUSED = "whole users (server refused attributes=)"
_DIFFERS = "whole users (narrowed answer differs)"
_OFF = "whole users (requestAttributes off)"
_NO_USER = "whole users (no user to compare)"
# Group pages carry member lists, so how many may wait in memory depends on their
# size: 8 MiB of response bodies (measured: a million-user import with 200
# members per group then stays under 400 MB, while small groups keep 8 or more
# requests in flight).
_GROUP_BUDGET = 8 * 1024 * 1024


@dataclass
class _Run:
    client: ScimClient
    paging: Paging
    group_paging: Paging
    memberships: Memberships
    warnings: Warnings
    strategy: str
    request_attributes: bool
    keyless: list[str] = field(default_factory=list)


class ScimSource:
    """Imports users, groups and memberships from a SCIM 2.0 service provider."""

    def __init__(self) -> None:
        self._stats: RequestStats | None = None

    def progress_counters(self) -> dict[str, int]:
        """Return request counters of the reading under way, for progress lines."""
        return dict(self._stats.counts) if self._stats is not None else {}

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
        self._stats = client.stats
        try:
            paging = client.paging(client.service_provider_config())
            logger.info(
                "Reading %s by %s paging, up to %d per page",
                client.base_url,
                paging.mode,
                paging.page_size,
            )
            group_size = min(paging.page_size, _int(options, "groupPageSize"))
            run = _Run(
                client,
                paging,
                replace(paging, page_size=group_size, memory_budget=_GROUP_BUDGET),
                Memberships(warnings),
                warnings,
                str(options["membershipStrategy"]),
                options["requestAttributes"] is True,
            )
            yield from _read(run)
        finally:
            client.close()
        warnings.log(logger)

    def check(self, options: Mapping[str, object]) -> Iterator[str]:
        """Probe the server in a few requests and report what ``run`` would do."""
        warnings = Warnings()
        client = _client(options, warnings)
        try:
            yield from _check(
                client,
                str(options["membershipStrategy"]),
                warnings,
                request_attributes=options["requestAttributes"] is True,
            )
        finally:
            client.close()


def _read(run: _Run) -> Iterator[Entity | Relationship]:
    yield from _users(run)
    groups = _groups(run)
    for group_id, group in groups:
        # Without memberships there is no count to claim.
        count = (
            None if run.strategy == "none" else run.memberships.member_count(group_id)
        )
        yield group_entity(group_id, group, count, run.warnings)
    yield from run.memberships.relationships(effective=True)


def _users(run: _Run) -> Iterator[Entity]:
    params, _ = _user_params(run.client, run.paging, enabled=run.request_attributes)
    # The listing numbers each new user in the memberships as it de-duplicates.
    seen = run.memberships.users_seen

    def start_groups() -> None:
        # Groups are recorded once every user has its number, but the first group
        # pages are fetched as the user listing ends, on connections its last
        # pages leave idle. Not earlier: the group listing would then combine
        # pages read far apart in time, of a directory that may have changed.
        params = _group_params(_lists_members(run.strategy))
        run.client.prefetch("Groups", run.group_paging, params, _GROUP_BUDGET)

    users = run.client.iter_resources(
        "Users", run.paging, params, seen=seen, near_end=start_groups
    )
    for resource in users:
        user_id = resource_id_of(resource)
        if user_id is None:
            continue
        _note_user_groups(run.memberships, user_id, user_groups(resource))
        yield user_entity(user_id, resource, run.warnings)
    logger.info("Read %d users", len(run.memberships.user_index))


def _user_params(
    client: ScimClient, paging: Paging, *, enabled: bool
) -> tuple[Params | None, str]:
    # Returns the listing's extra query and the outcome for `check`. RFC 7644
    # §3.4.2.5 lets a server ignore attributes=, refuse it or answer with less than
    # asked, so the first users are read twice, whole and narrowed, and the
    # parameter is used only when every one of them maps to the same entity and
    # groups both ways. A sample rather than one user: the first user is often an
    # admin or a service account without a manager or the enterprise extension,
    # which would leave those attributes untested. The probe costs two requests of
    # up to _PROBE_USERS users before the listing.
    if not enabled:
        return None, _OFF
    query = _first_page(paging, min(paging.page_size, _PROBE_USERS))
    # The listing's own first request, for a few users: what fails here would fail
    # the listing too, so its errors are the listing's (retried, then fatal), and a
    # server that is down is not asked twice as long.
    whole = _users_by_id(client.get("Users", query))
    if not whole:
        logger.info("Reading whole users: there is no user to compare")
        return None, _NO_USER

    narrowed_query = {**query, "attributes": USER_ATTRIBUTES}
    try:
        body = client.get("Users", narrowed_query, end_statuses=_REFUSALS)
    except ScimConnectorError as exc:
        # A 401 here, just after the same credentials were accepted, is this
        # server's way of refusing the parameter, not a credentials problem.
        logger.info("Reading whole users: the server refused attributes= (%s)", exc)
        return None, _REFUSED
    if body is None or _is_scim_error(body):
        logger.info("Reading whole users: the server refused attributes=")
        return None, _REFUSED

    narrowed = _users_by_id(body)
    for user_id, resource in whole.items():
        differences = _differences(user_id, resource, narrowed.get(user_id))
        if differences:
            logger.warning(
                "The server's answer with attributes= differs from the whole user "
                "%s (%s); reading whole users",
                user_id,
                ", ".join(differences),
            )
            return None, _DIFFERS
    logger.info(
        "Listing users with only the attributes the import maps (checked on %d)",
        len(whole),
    )
    return {"attributes": USER_ATTRIBUTES}, _NARROWED


def _first_page(paging: Paging, count: int) -> dict[str, str | int]:
    # As a listing starts (client.py): RFC 9865 §2 begins with an empty cursor and
    # never sends startIndex with it.
    if paging.mode == "cursor":
        return {"cursor": "", "count": count}
    return {"startIndex": 1, "count": count}


def _users_by_id(body: JsonObject | None) -> dict[str, JsonObject]:
    found: dict[str, JsonObject] = {}
    for resource in _resources(body):
        user_id = resource_id_of(resource)
        if user_id is not None:
            found.setdefault(user_id, resource)
    return found


def _is_scim_error(body: JsonObject) -> bool:
    # A body in the Error schema (RFC 7644 §3.12) is a refusal, whatever the status.
    schemas = lowered_get(body, "schemas")
    return isinstance(schemas, list) and any(
        isinstance(s, str) and s.lower() == _ERROR_SCHEMA for s in schemas
    )


def _differences(
    user_id: str, whole: JsonObject, narrowed: JsonObject | None
) -> list[str]:
    # Names only, never values: user attributes are personal data.
    if narrowed is None:
        return ["another user"]
    entities = [user_entity(user_id, user, Warnings()) for user in (whole, narrowed)]
    found = []
    if entities[0] != entities[1]:
        pairs = [
            {(a.attribute_type_id, repr(a.value)) for a in e.attribute_assignments}
            for e in entities
        ]
        found = sorted({name for name, _ in pairs[0] ^ pairs[1]}) or ["name"]
    if user_groups(whole) != user_groups(narrowed):
        found.append("groups")
    return found


def _note_user_groups(memberships: Memberships, user_id: str, groups: object) -> None:
    # RFC 7643 §4.1.2: a user's groups are read-only, "direct" or "indirect".
    if not isinstance(groups, list):
        return
    for entry in groups:
        if not isinstance(entry, dict):
            continue
        entry = lowered(entry)
        value = entry.get("value")
        if isinstance(value, str):
            indirect = str(entry.get("type", "")).lower() == "indirect"
            memberships.add_user_group(user_id, value, indirect=indirect)


def _groups(run: _Run) -> list[tuple[str, dict[str, object]]]:
    if _lists_members(run.strategy):
        try:
            groups = _list_groups(run, with_members=True)
        except ScimRequestError as exc:
            if run.strategy == "inline" or not _overload(exc):
                raise
            logger.warning(
                "Listing groups with their members failed (%s); listing them without "
                "members and reading each group by id instead",
                exc,
            )
            run.memberships.reset_groups()
            run.strategy = "perGroup"
            groups = _list_groups(run, with_members=False)
    else:
        groups = _list_groups(run, with_members=False)
    if run.strategy == "auto":
        sample = [resource_id for resource_id, _ in groups]
        run.strategy, reason = detect_strategy(
            run.client, run.paging, run.memberships, sample
        )
        if run.strategy == "none":
            msg = (
                f"membership looks unavailable: {reason}; refusing to import "
                f"{len(groups)} groups as empty (set membershipStrategy=none to do so)"
            )
            raise ScimConnectorError(msg)
        logger.info("Membership strategy %s: %s", run.strategy, reason)
    if run.strategy == "inline" and run.keyless:
        # SCIM-QUIRKS 7: a list may leave out some groups' members (nested groups,
        # say) that the group itself carries when read by id.
        count = len(run.keyless)
        logger.info("Reading %d groups listed without members by id", count)
        read_groups_by_id(run.client, run.memberships, run.keyless)
    group_ids = [group_id for group_id, _ in groups]
    read_memberships(run.client, run.paging, run.memberships, group_ids, run.strategy)
    if (
        run.strategy != "none"
        and group_ids
        and not any(map(run.memberships.has_members, group_ids))
    ):
        # Whatever the strategy, a directory whose groups are all empty is far more
        # likely a reading that found no members than the truth.
        msg = (
            f"membership strategy {run.strategy} found no member in any of "
            f"{len(group_ids)} groups; refusing to import them as empty (set "
            "membershipStrategy=none to do so)"
        )
        raise ScimConnectorError(msg)
    logger.info("Read %d groups", len(groups))
    return groups


def _list_groups(
    run: _Run, *, with_members: bool
) -> list[tuple[str, dict[str, object]]]:
    try:
        return _listed_groups(run, with_members=with_members)
    finally:
        # Pages fetched ahead for another query (the listing with members, when
        # it failed and groups are listed without) would only take memory.
        run.client.forget_prefetched()


def _listed_groups(
    run: _Run, *, with_members: bool
) -> list[tuple[str, dict[str, object]]]:
    groups = []
    run.keyless = []
    params = _group_params(with_members)
    for resource in run.client.iter_resources("Groups", run.group_paging, params):
        group_id = resource_id_of(resource)
        if group_id is None:
            continue
        # Keep the group without its member list: members go into the compact
        # memberships store, and a copy of a large list would double memory.
        group = {k: v for k, v in resource.items() if k.lower() != "members"}
        members = lowered_get(resource, "members")
        run.memberships.add_group(group_id)
        if with_members:
            _add_members(run.memberships, run.warnings, group_id, members)
            if members is None:
                run.keyless.append(group_id)
        groups.append((group_id, group))
    return groups


def _lists_members(strategy: str) -> bool:
    # Strategies that list groups with their members (the prefetch asks the same).
    return strategy in ("auto", "inline")


def _group_params(with_members: bool) -> Params | None:  # noqa: FBT001
    return None if with_members else _EXCLUDE_MEMBERS


def _add_members(
    memberships: Memberships, warnings: Warnings, group_id: str, members: object
) -> None:
    if isinstance(members, list):
        memberships.add_members(group_id, members)
    elif members is not None:
        warnings.add("groups whose members are not a list, members skipped")


def _overload(exc: ScimRequestError) -> bool:
    # Large groups make some servers fail the group list (SCIM-QUIRKS 8).
    return not isinstance(exc, ScimAuthError) and (
        exc.status is None or exc.status >= 500
    )


def _check(
    client: ScimClient, strategy: str, warnings: Warnings, *, request_attributes: bool
) -> Iterator[str]:
    config = client.service_provider_config()
    discovery = []
    for endpoint in ("ServiceProviderConfig", "ResourceTypes", "Schemas"):
        present = config is not None if endpoint == "ServiceProviderConfig" else None
        if present is None:
            present = _probe(client, endpoint)
        discovery.append(f"{endpoint} {'yes' if present else 'no'}")
    paging = client.paging(config)
    users = client.get("Users", _first_page(paging, paging.page_size))
    yield f"reachable and authenticated: {client.base_url}"
    yield f"discovery endpoints: {', '.join(discovery)}"
    cursor = "supported" if paging.cursor_supported else "not advertised"
    yield (
        f"paging: {paging.mode} mode, page size {paging.page_size} "
        f"(cursor paging {cursor})"
    )
    _, attributes = _user_params(client, paging, enabled=request_attributes)
    yield f"user attributes: {attributes}"
    groups_page = client.get("Groups", _first_page(paging, paging.page_size))
    resources = _resources(groups_page)
    carry = sum(1 for r in resources if isinstance(lowered(r).get("members"), list))
    yield f"group list carries members: {carry} of the first {len(resources)} groups"
    memberships = Memberships(warnings)
    for resource in resources:
        group_id = resource_id_of(resource)
        if group_id is not None:
            memberships.add_group(group_id)
            _add_members(
                memberships, warnings, group_id, lowered(resource).get("members")
            )
    for resource in _resources(users):
        user_id = resource_id_of(resource)
        if user_id is not None:
            memberships.add_user(user_id)
            # Servers that show memberships only on users (SCIM-QUIRKS) need them
            # noted, or detection would find none.
            _note_user_groups(memberships, user_id, user_groups(resource))
    if strategy == "auto":
        sample = [gid for gid in (resource_id_of(r) for r in resources) if gid]
        strategy, reason = detect_strategy(client, paging, memberships, sample)
        yield f"membership strategy: {strategy} ({reason})"
    else:
        yield f"membership strategy: {strategy} (configured)"
    yield f"users: {_total(users)}"
    yield f"groups: {_total(groups_page)}"
    lines = warnings.lines()
    yield "warnings: " + ("; ".join(lines) if lines else "none")
    if strategy == "none":
        msg = "membership looks unavailable on this server (see above)"
        raise ScimConnectorError(msg)


def _probe(client: ScimClient, endpoint: str) -> bool:
    try:
        return client.get(endpoint, end_statuses=(400, 401, 403, 404, 501)) is not None
    except ScimConnectorError:
        return False


def _resources(body: JsonObject | None) -> list[JsonObject]:
    raw = lowered(body or {}).get("resources")
    return [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []


def _total(body: JsonObject | None) -> str:
    total = lowered(body or {}).get("totalresults")
    return str(total) if isinstance(total, int | str) else "unknown (no totalResults)"


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
    if parts.scheme == "http" and not is_loopback(base_url):
        if options["allowInsecureHttp"] is not True:
            msg = (
                f"Base URL {base_url} is plain http:// to another host: the password "
                "would cross the network unencrypted; use https:// or set "
                "allowInsecureHttp"
            )
            raise ConfigurationError(msg)
        logger.warning("Sending credentials over plain http:// to %s", parts.hostname)
    if options["membershipStrategy"] not in STRATEGIES:
        msg = f"membershipStrategy must be one of {', '.join(STRATEGIES)}"
        raise ConfigurationError(msg)
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        msg = f"Base URL has an invalid port: {base_url}"
        raise ConfigurationError(msg) from exc
    username = options.get("username")
    password = str(options["password"])
    _check_header_safe(str(username or ""), password, bearer=not username)
    settings = ClientSettings(
        timeout=float(_int(options, "requestTimeout")),
        page_size=_int(options, "pageSize"),
        retry_attempts=_int(options, "retryAttempts"),
        retry_backoff=_int(options, "retryBackoffMs") / 1000,
        retry_after_max=float(_int(options, "retryAfterMax")),
        max_response_bytes=_int(options, "maxResponseMb") * 1024 * 1024,
        concurrency=_int(options, "concurrency"),
        max_resources=_int(options, "maxResources"),
        verify=_verify(options, base_url),
        cert=_client_certificate(options),
    )
    return ScimClient(
        base_url,
        username=str(username) if username else None,
        password=password,
        settings=settings,
        warnings=warnings,
    )


def _check_header_safe(username: str, password: str, *, bearer: bool) -> None:
    # Line breaks and control characters cannot travel in an HTTP header; a bearer
    # token must also fit Latin-1 (Basic credentials are sent as UTF-8).
    for name, value in (("Username", username), ("Password", password)):
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            msg = f"{name} contains a line break or control character"
            raise ConfigurationError(msg)
    if bearer and not password.isascii():
        try:
            password.encode("latin-1")
        except UnicodeEncodeError as exc:
            msg = "the bearer token has characters an HTTP header cannot carry"
            raise ConfigurationError(msg) from exc


def _verify(options: Mapping[str, object], base_url: str) -> bool | str:
    ca_bundle = options.get("caBundle")
    if options.get("verifyTls") is False:
        logger.warning(
            "TLS certificate verification is OFF for %s: anyone on the network path "
            "can impersonate the server and read the credentials",
            base_url,
        )
        return False
    return str(ca_bundle) if ca_bundle else True


def _client_certificate(options: Mapping[str, object]) -> tuple[str, str] | None:
    certificate, key = options.get("clientCertificate"), options.get("clientKey")
    if bool(certificate) != bool(key):
        msg = "clientCertificate and clientKey go together: set both or neither"
        raise ConfigurationError(msg)
    return (str(certificate), str(key)) if certificate and key else None


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
