"""The gateway's Connect service, built on the SDK's generated classes.

The SDK's own ``app()`` answers a version mismatch with a bare ``BaseException``,
which connect-python lets through as a silent, successful and empty import; this
service checks the version itself and answers with a Connect error instead.

Needs the ``gateway`` extra; `elimity_scim.connector.gateway` imports it lazily.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import Headers, RequestContext
from elimity.insights.common.v1alpha1.common_pb2 import Entity as EntityMessage
from elimity.insights.common.v1alpha1.common_pb2 import (
    Relationship as RelationshipMessage,
)
from elimity.insights.common.v1alpha1.common_pb2 import Value as ValueMessage
from elimity.insights.customgateway.v1alpha2.customgateway_connect import (
    ServiceASGIApplication,
)
from elimity.insights.customgateway.v1alpha2.customgateway_pb2 import (
    Level as LevelMessage,
)
from elimity.insights.customgateway.v1alpha2.customgateway_pb2 import (
    Log,
    MetaRequest,
    MetaResponse,
    PerformImportRequest,
    PerformImportResponse,
)
from elimity_insights_client import (
    AttributeAssignment,
    BooleanValue,
    DateTimeValue,
    DateValue,
    Entity,
    NumberValue,
    StringValue,
    Value,
)

from elimity_scim.connector.contract import Item, Source
from elimity_scim.connector.errors import (
    ConfigurationError,
    ConnectorError,
    PushRefusedError,
    SourceAuthError,
    SourceError,
)
from elimity_scim.connector.gateway import (
    GatewayConfig,
    UrlRefusedError,
    check_urls,
    field_secrets,
    gateway_version,
    resolve_fields,
)
from elimity_scim.connector.jwt_auth import (
    JwtVerifier,
    KeysUnavailableError,
    TokenRejectedError,
)
from elimity_scim.connector.logs import RedactingFormatter
from elimity_scim.connector.snapshot import SnapshotValidator, validated

logger = logging.getLogger(__name__)

INITIAL_CURSOR = "full"
"""The only cursor: one call imports everything (see `GatewayService`)."""
QUEUE_BOUND = 256
"""Most items read ahead of what the caller has taken from the stream."""
READ_MAX_BYTES = 1 << 20
"""Largest request accepted; the body is read before the token is checked."""
_POLL_SECONDS = 0.2
_MAX_SHOWN = 80

T = TypeVar("T")


def build_application(
    source: Source, config: GatewayConfig, redactor: RedactingFormatter
) -> ServiceASGIApplication:
    """Return the Connect ASGI application serving one source."""
    service = GatewayService(source, config, redactor)
    return ServiceASGIApplication(service, read_max_bytes=READ_MAX_BYTES)


class GatewayService:
    """``Meta`` and ``PerformImport`` of one source.

    Cursors: ``Meta`` hands out the string cursor ``"full"`` and ``PerformImport``
    never streams a follow-up cursor, so one call reads the whole directory. SCIM
    paging and membership reading cannot be resumed from a token Insights could
    hold (offsets shift as the directory changes, nested groups need every group),
    so splitting the import would only make it inconsistent. Each call is
    self-contained and can be repeated.
    """

    def __init__(
        self, source: Source, config: GatewayConfig, redactor: RedactingFormatter
    ) -> None:
        self._source = source
        self._manifest = source.manifest()
        self._data_model = source.data_model()
        self._config = config
        self._redactor = redactor
        self._verifier = JwtVerifier(config.jwt) if config.jwt is not None else None
        self.version = gateway_version(self._manifest)
        types = self._data_model.get("entityTypes")
        first = types[0] if isinstance(types, list) and types else {}
        self._guarded_type = str(first.get("id", "")) if isinstance(first, dict) else ""

    async def meta(
        self, request: MetaRequest, ctx: RequestContext[MetaRequest, MetaResponse]
    ) -> MetaResponse:
        """Announce the initial cursor and the gateway's version."""
        await self._authenticate(ctx.request_headers())
        return MetaResponse(
            initial_cursor={"string_value": INITIAL_CURSOR}, version=self.version
        )

    async def perform_import(
        self,
        request: PerformImportRequest,
        ctx: RequestContext[PerformImportRequest, PerformImportResponse],
    ) -> AsyncIterator[PerformImportResponse]:
        """Stream every entity and relationship, then an info log item.

        A failure after the call was accepted sends an alert log item and ends the
        stream with a Connect error, never with a clean end.
        """
        await self._authenticate(ctx.request_headers())
        self._check_version(request.version)
        _check_cursor(request)
        fields = {str(key): _plain(value) for key, value in request.fields.items()}
        self._redactor.add_secrets(field_secrets(self._manifest, fields))
        validator = SnapshotValidator(self._data_model)
        error: ConnectError | None = None
        try:
            options = resolve_fields(self._manifest, fields, self._config.settings)
            check_urls(self._manifest, options, self._config.allowed_base_urls)
            logger.info("Import requested; reading the source")
            messages = iterate_in_thread(
                lambda: self._read(options, validator), QUEUE_BOUND
            )
            async with contextlib.aclosing(messages):
                async for message in messages:
                    yield message
        except Exception as exc:  # every failure ends the stream with an error
            error = self._failure(exc)
        if error is not None:
            yield _log(message=error.message, alert=True)
            raise error
        summary = validator.counts.describe(self._data_model)
        logger.info("Import complete: %s", summary)
        yield _log(message=f"Imported {summary}", alert=False)

    def _read(
        self, options: Mapping[str, object], validator: SnapshotValidator
    ) -> Generator[PerformImportResponse, None, None]:
        reading = self._source.read(options)
        try:
            for item in validated(reading, validator):
                yield item_message(item)
        finally:
            close = getattr(reading, "close", None)
            if callable(close):
                close()
        guarded = self._guarded_type
        empty = guarded and validator.counts.entities[guarded] == 0
        if empty and not self._config.allow_empty:
            msg = (
                f"refusing to import a reading without any {guarded}: it would "
                "empty the source in Insights (start the gateway with --allow-empty "
                "if intended)"
            )
            raise PushRefusedError(msg)

    async def _authenticate(self, request_headers: Headers) -> None:
        if self._verifier is None:
            return
        headers = request_headers.getall("authorization")
        if len(headers) > 1:
            msg = "more than one Authorization header"
            raise ConnectError(Code.UNAUTHENTICATED, msg)
        try:
            await asyncio.to_thread(
                self._verifier.verify, headers[0] if headers else None
            )
        except TokenRejectedError as exc:
            logger.warning("Refused a call: %s", exc)
            raise ConnectError(Code.UNAUTHENTICATED, str(exc)) from exc
        except KeysUnavailableError as exc:
            logger.error("Cannot check tokens: %s: %s", exc, exc.__cause__)
            raise ConnectError(Code.UNAVAILABLE, str(exc)) from exc

    def _check_version(self, version: str) -> None:
        if version == self.version:
            return
        shown = repr(version[:_MAX_SHOWN]) if version else "none"
        msg = (
            f"version mismatch: this gateway is {self.version}, the call names "
            f"{shown}; the gateway changed, start the import again"
        )
        logger.warning("Refused a call: %s", msg)
        raise ConnectError(Code.FAILED_PRECONDITION, msg)

    def _failure(self, exc: Exception) -> ConnectError:
        if isinstance(exc, ConnectorError):
            reason = str(exc)
        else:
            logger.debug("internal error", exc_info=exc)
            reason = f"internal error: {type(exc).__name__}: {exc}"
        message = self._redactor.redact(f"Import failed: {reason}")
        logger.error("%s", message)
        return ConnectError(_code(exc), message)


def _code(exc: Exception) -> Code:
    """Return the Connect code for a failed import."""
    if isinstance(exc, UrlRefusedError):
        return Code.PERMISSION_DENIED
    if isinstance(exc, ConfigurationError):
        return Code.INVALID_ARGUMENT
    # Not unauthenticated/permission_denied: those would blame Insights' token.
    if isinstance(exc, SourceAuthError | PushRefusedError):
        return Code.FAILED_PRECONDITION
    if isinstance(exc, SourceError):
        return Code.UNAVAILABLE
    return Code.INTERNAL  # a SnapshotError (the source broke its model) or a bug


def _check_cursor(request: PerformImportRequest) -> None:
    # An absent or null cursor also means "from the start": one call is everything.
    if not request.HasField("cursor"):
        return
    kind = request.cursor.WhichOneof("kind")
    if kind in (None, "null_value"):
        return
    if kind == "string_value" and request.cursor.string_value == INITIAL_CURSOR:
        return
    msg = f"unknown cursor: this gateway only hands out {INITIAL_CURSOR!r}"
    raise ConnectError(Code.INVALID_ARGUMENT, msg)


# -- Messages ---------------------------------------------------------------------


def item_message(item: Item) -> PerformImportResponse:
    """Return the stream message of one entity or relationship."""
    if isinstance(item, Entity):
        entity = EntityMessage(
            attribute_assignments=_assignments(item.attribute_assignments),
            id=item.id,
            name=item.name,
            type=item.type,
        )
        return PerformImportResponse(entity=entity)
    relationship = RelationshipMessage(
        attribute_assignments=_assignments(item.attribute_assignments),
        from_entity_id=item.from_entity_id,
        from_entity_type=item.from_entity_type,
        to_entity_id=item.to_entity_id,
        to_entity_type=item.to_entity_type,
    )
    return PerformImportResponse(relationship=relationship)


def value_message(value: Value) -> ValueMessage:
    """Return the protocol value of an attribute value; moments are UTC."""
    if isinstance(value, BooleanValue):
        return ValueMessage(boolean=value.value)
    if isinstance(value, NumberValue):
        return ValueMessage(number=float(value.value))
    if isinstance(value, StringValue):
        return ValueMessage(string=value.value)
    if isinstance(value, DateTimeValue):
        moment = value.value
        parts = (moment.year, moment.month, moment.day)
        clock = (moment.hour, moment.minute, moment.second)
        return ValueMessage(date_time=_timestamp(*parts, *clock))
    if isinstance(value, DateValue):
        # Midnight UTC of the day, as the SDK sends dates.
        return ValueMessage(date=_timestamp(value.year, value.month, value.day))
    # A time is sent on 0001-01-01 UTC, as the SDK does.
    return ValueMessage(
        time=_timestamp(1, 1, 1, value.hour, value.minute, value.second)
    )


def _timestamp(*parts: int) -> dict[str, int]:
    padded = (*parts, 0, 0, 0)[:6]
    return {"seconds": calendar.timegm(padded)}


def _assignments(
    assignments: Iterable[AttributeAssignment],
) -> dict[str, ValueMessage]:
    # The validator has refused repeated attributes, so the map loses nothing.
    return {a.attribute_type_id: value_message(a.value) for a in assignments}


def _log(*, message: str, alert: bool) -> PerformImportResponse:
    level = LevelMessage(alert={}) if alert else LevelMessage(info={})
    return PerformImportResponse(log=Log(level=level, message=message))


class _StructValue(Protocol):
    """The parts of ``google.protobuf.Value`` read here (it ships untyped)."""

    string_value: str
    number_value: float
    bool_value: bool

    @property
    def struct_value(self) -> _Struct: ...

    @property
    def list_value(self) -> _ListValue: ...

    def WhichOneof(self, name: str) -> str | None: ...  # noqa: D102


class _Struct(Protocol):
    @property
    def fields(self) -> Mapping[str, _StructValue]: ...


class _ListValue(Protocol):
    @property
    def values(self) -> Sequence[_StructValue]: ...


def _plain(value: _StructValue) -> object:
    """Return a ``google.protobuf.Value`` as plain JSON data; numbers stay floats."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        return value.number_value
    if kind == "struct_value":
        return {str(k): _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None


# -- Streaming a blocking iterator --------------------------------------------------


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True)
class _Finished:
    pass


class _Handoff(Generic[T]):
    """Items passed from a worker thread to the event loop, at most ``bound`` ahead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bound: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[T | _Failed | _Finished] = asyncio.Queue()
        self.slots = threading.Semaphore(bound)
        self.stop = threading.Event()

    def put(self, entry: T | _Failed | _Finished) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads
            self.loop.call_soon_threadsafe(self.queue.put_nowait, entry)

    def work(self, produce: Callable[[], Generator[T, None, None]]) -> None:
        try:
            items = produce()
            try:
                for item in items:
                    while not self.slots.acquire(timeout=_POLL_SECONDS):
                        if self.stop.is_set():
                            return
                    if self.stop.is_set():
                        return
                    self.put(item)
            finally:
                items.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            self.put(_Failed(exc))
        else:
            self.put(_Finished())


async def iterate_in_thread(
    produce: Callable[[], Generator[T, None, None]], bound: int
) -> AsyncGenerator[T, None]:
    """Yield the items of a blocking generator that runs in a worker thread.

    The worker stays at most ``bound`` items ahead; closing this iterator makes
    the worker close the generator after its current step. An exception of the
    generator is raised here.
    """
    handoff: _Handoff[T] = _Handoff(asyncio.get_running_loop(), bound)
    worker = threading.Thread(
        target=handoff.work, args=(produce,), name="gateway-read", daemon=True
    )
    worker.start()
    try:
        while True:
            entry = await handoff.queue.get()
            if isinstance(entry, _Failed):
                if isinstance(entry.error, Exception):
                    raise entry.error
                msg = f"the reading thread stopped: {entry.error!r}"
                raise RuntimeError(msg) from entry.error
            if isinstance(entry, _Finished):
                return
            handoff.slots.release()
            yield entry
    finally:
        handoff.stop.set()
