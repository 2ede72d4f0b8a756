"""The ``elimity-connector`` command: list, describe, check and run sources."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from elimity_insights_client import Level

from elimity_scim.connector.arguments import LOG_LEVELS, add_source_arguments, env_flag
from elimity_scim.connector.config import resolve, secret_values
from elimity_scim.connector.contract import Source, load_source, source_names
from elimity_scim.connector.delivery import (
    InsightsTarget,
    push_snapshot,
    send_log,
    write_snapshot_file,
)
from elimity_scim.connector.errors import (
    ConfigurationError,
    ConnectorError,
    ExitCode,
    PushError,
)
from elimity_scim.connector.gateway import add_serve_command
from elimity_scim.connector.guards import PushGuard, default_state_file
from elimity_scim.connector.http import is_loopback
from elimity_scim.connector.logs import RedactingFormatter
from elimity_scim.connector.progress import Progress
from elimity_scim.connector.snapshot import SnapshotValidator

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = _parser().parse_args(argv)
    level = args.log_level or os.environ.get("ELIMITY_LOG_LEVEL") or "INFO"
    formatter = _configure_logging(level)
    # SIGTERM (a scheduler's stop) unwinds like Ctrl-C, so partial files go too.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if level.upper() not in LOG_LEVELS:
            msg = f"ELIMITY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}"
            raise ConfigurationError(msg)
        return int(args.handler(args, formatter))
    except ConnectorError as exc:
        logger.error("%s", exc)  # noqa: TRY400 - one line, no traceback
        return int(exc.exit_code)
    except KeyboardInterrupt:
        logger.error("interrupted; nothing was delivered")
        return 130


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elimity-connector",
        description="Run Elimity Insights sources installed as plugins.",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="log verbosity (env ELIMITY_LOG_LEVEL; default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list the installed sources")
    listing.set_defaults(handler=_list)
    for name, handler, text in (
        ("manifest", _manifest, "print a source's manifest"),
        ("data-model", _data_model, "print the data model to import into Insights"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("source")
        sub.set_defaults(handler=handler)

    run = commands.add_parser("run", help="read a source and deliver a snapshot")
    add_source_arguments(run, config_help="JSON file with option and setting values")
    run.add_argument(
        "--insights-url", help="Insights base URL (env ELIMITY_INSIGHTS_URL)"
    )
    run.add_argument(
        "--source-id", help="Insights custom source id (env ELIMITY_SOURCE_ID)"
    )
    run.add_argument(
        "--allow-empty",
        action="store_true",
        help="push even a snapshot without any entity of the first type (users) "
        "(env ELIMITY_ALLOW_EMPTY=true)",
    )
    run.add_argument(
        "--max-drop",
        type=float,
        metavar="FRACTION",
        help="refuse to push when an entity count fell by more than this fraction "
        "since the last push, e.g. 0.3 (env ELIMITY_MAX_DROP; default: no check)",
    )
    run.add_argument(
        "--state-file",
        type=Path,
        help="where the counts of the last push are kept (env ELIMITY_STATE_FILE; "
        "default ~/.local/state/elimity-connector/state.json)",
    )
    run.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow an http:// Insights URL to a host that is not loopback "
        "(env ELIMITY_ALLOW_INSECURE_HTTP=true)",
    )
    run.add_argument(
        "--push-timeout",
        type=float,
        help="seconds to wait for Insights to accept the upload "
        "(env ELIMITY_PUSH_TIMEOUT; default 600)",
    )
    run.add_argument(
        "--output",
        type=Path,
        help="write the snapshot JSON to this file instead of pushing it",
    )
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="diagnose a source's configuration")
    add_source_arguments(check, config_help="JSON file with option and setting values")
    check.set_defaults(handler=_check)
    add_serve_command(commands)
    return parser


def _configure_logging(level: str | None) -> RedactingFormatter:
    name = (level or "INFO").upper()
    if name not in LOG_LEVELS:
        name = "INFO"
    handler = logging.StreamHandler(sys.stderr)
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name)
    return formatter


def _list(args: argparse.Namespace, formatter: RedactingFormatter) -> int:
    for name in source_names():
        manifest = load_source(name).manifest()
        line = f"{name}\t{manifest.get('name', name)}\t{manifest.get('version', '')}"
        sys.stdout.write(line + "\n")
    return ExitCode.OK


def _manifest(args: argparse.Namespace, formatter: RedactingFormatter) -> int:
    _print_json(load_source(args.source).manifest())
    return ExitCode.OK


def _data_model(args: argparse.Namespace, formatter: RedactingFormatter) -> int:
    _print_json(load_source(args.source).data_model())
    return ExitCode.OK


def _check(args: argparse.Namespace, formatter: RedactingFormatter) -> int:
    source, options = _configured_source(args, formatter)
    check = getattr(source, "check", None)
    if check is None:
        msg = f"source {args.source!r} offers no check"
        raise ConfigurationError(msg)
    for line in check(options):
        sys.stdout.write(formatter.redact(str(line)) + "\n")
        sys.stdout.flush()
    return ExitCode.OK


def _run(args: argparse.Namespace, formatter: RedactingFormatter) -> int:
    source, options = _configured_source(args, formatter)
    if args.output is not None:
        _check_output(args.output)
    target = None if args.output else _insights_target(args, os.environ)
    timeout = _push_timeout(args, os.environ)
    if target is not None:
        formatter.add_secrets(target.secret_forms())
    data_model = source.data_model()
    validator = SnapshotValidator(data_model)
    guard = None if target is None else _guard(args, os.environ, target, data_model)
    if guard is not None:
        guard.check_writable()
    try:
        progress = Progress(validator.counts, data_model, _counters(source))
        # A run allocates millions of short-lived, acyclic objects (JSON pages,
        # entities) while a few containers grow to millions of entries; with default
        # thresholds the cyclic collector scans them again and again (15 to 25 % of
        # the CPU time, profiled at 50,000 and 1,000,000 users).
        gc.set_threshold(50_000, 100, 1000)
        items = progress.track(source.read(options))
        if target is None or guard is None:
            write_snapshot_file(args.output, items, validator)
        else:

            def check() -> None:
                guard.check(validator.counts)

            push_snapshot(target, items, validator, timeout=timeout, before_send=check)
            guard.record(validator.counts)
    except ConnectorError as exc:
        _alert(target, exc, formatter, timeout)
        raise
    except Exception as exc:
        logger.debug("internal error", exc_info=True)
        error = ConnectorError(f"internal error: {type(exc).__name__}: {exc}")
        _alert(target, error, formatter, timeout)
        raise error from exc

    summary = validator.counts.describe(data_model)
    where = f"wrote {args.output}" if target is None else "pushed to Insights"
    logger.info("Import complete, %s: %s", where, summary)
    if target is not None:
        try:
            send_log(target, Level.INFO, f"Imported {summary}", timeout=timeout)
        except PushError as exc:
            # The snapshot is in; only the log line is missing.
            logger.warning("Snapshot accepted, but the connector log failed: %s", exc)
    return ExitCode.OK


def _counters(source: Source) -> Callable[[], Mapping[str, int]]:
    # Optional part of the contract: a source may report its own counters.
    counters = getattr(source, "progress_counters", None)
    if callable(counters):
        return lambda: dict(counters())
    return dict


def _configured_source(
    args: argparse.Namespace, formatter: RedactingFormatter
) -> tuple[Source, dict[str, object]]:
    if args.log_level:
        logging.getLogger().setLevel(args.log_level)
    source = load_source(args.source)
    manifest = source.manifest()
    options = resolve(
        manifest, config_file=args.config, environ=os.environ, overrides=args.set
    )
    formatter.add_secrets(secret_values(manifest, options))
    return source, options


def _insights_target(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> InsightsTarget:
    url = args.insights_url or environ.get("ELIMITY_INSIGHTS_URL")
    source_id = args.source_id or environ.get("ELIMITY_SOURCE_ID")
    token = _insights_token(environ)
    missing = [
        name
        for name, value in (
            ("--insights-url or ELIMITY_INSIGHTS_URL", url),
            ("--source-id or ELIMITY_SOURCE_ID", source_id),
            ("ELIMITY_INSIGHTS_TOKEN or ELIMITY_INSIGHTS_TOKEN_FILE", token),
        )
        if not value
    ]
    if missing or url is None or source_id is None or token is None:
        msg = "pushing needs " + ", ".join(missing) + " (or use --output FILE)"
        raise ConfigurationError(msg)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        msg = f"the Insights URL must be http(s)://host[:port] without user info: {url}"
        raise ConfigurationError(msg)
    insecure = args.allow_insecure_http or env_flag(
        environ, "ELIMITY_ALLOW_INSECURE_HTTP"
    )
    if parts.scheme == "http" and not is_loopback(url) and not insecure:
        msg = (
            f"the Insights URL {url} is plain http:// to another host: the token would "
            "cross the network unencrypted (use https:// or --allow-insecure-http)"
        )
        raise ConfigurationError(msg)
    if parts.path.rstrip("/").endswith("/api"):
        msg = f"give the Insights URL without /api (the client adds it): {url}"
        raise ConfigurationError(msg)
    if any(ord(c) < 32 or ord(c) == 127 for c in token) or not token.isascii():
        msg = "the Insights token contains characters an HTTP header cannot carry"
        raise ConfigurationError(msg)
    if not source_id.strip().isdigit():
        msg = f"the Insights source id must be a number: {source_id!r}"
        raise ConfigurationError(msg)
    return InsightsTarget(url=url.rstrip("/"), source_id=int(source_id), token=token)


def _guard(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    target: InsightsTarget,
    data_model: Mapping[str, object],
) -> PushGuard:
    raw = (
        args.max_drop if args.max_drop is not None else environ.get("ELIMITY_MAX_DROP")
    )
    max_drop = None
    if raw not in (None, ""):
        try:
            max_drop = float(str(raw))
        except ValueError:
            max_drop = -1.0
        if not 0 <= max_drop <= 1:
            msg = f"--max-drop must be a fraction from 0 to 1, not {raw!r}"
            raise ConfigurationError(msg)
    state_file = args.state_file or environ.get("ELIMITY_STATE_FILE")
    types = data_model.get("entityTypes")
    first = types[0] if isinstance(types, list) and types else {}
    return PushGuard(
        key=f"{target.url}#{target.source_id}",
        guarded_type=str(first.get("id", "")) if isinstance(first, dict) else "",
        allow_empty=args.allow_empty or env_flag(environ, "ELIMITY_ALLOW_EMPTY"),
        max_drop=max_drop,
        state_file=Path(state_file) if state_file else default_state_file(environ),
    )


def _check_output(path: Path) -> None:
    # Checked before reading, so that a typo does not cost a whole run; the file is
    # replaced atomically, so it must be a plain file (not a link or a device).
    parent = path.parent
    if not str(path) or path.is_dir():
        msg = f"--output must name a file, not a directory: {path!s}"
        raise ConfigurationError(msg)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        msg = f"--output {path} exists and is not a regular file; name a new file"
        raise ConfigurationError(msg)
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        msg = f"--output {path}: the folder {parent} does not exist or is not writable"
        raise ConfigurationError(msg)


def _push_timeout(args: argparse.Namespace, environ: Mapping[str, str]) -> float:
    raw = args.push_timeout
    if raw is None:
        raw = environ.get("ELIMITY_PUSH_TIMEOUT") or 600
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 0.0
    if not 1 <= timeout <= 86400:
        msg = f"the push timeout must be 1 to 86400 seconds, not {raw!r}"
        raise ConfigurationError(msg)
    return timeout


def _insights_token(environ: Mapping[str, str]) -> str | None:
    path = environ.get("ELIMITY_INSIGHTS_TOKEN_FILE")
    if path and environ.get("ELIMITY_INSIGHTS_TOKEN"):
        msg = "set either ELIMITY_INSIGHTS_TOKEN or ELIMITY_INSIGHTS_TOKEN_FILE"
        raise ConfigurationError(msg)
    if not path:
        return environ.get("ELIMITY_INSIGHTS_TOKEN") or None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n") or None
    except OSError as exc:
        msg = f"cannot read ELIMITY_INSIGHTS_TOKEN_FILE: {exc.strerror}"
        raise ConfigurationError(msg) from exc


def _alert(
    target: InsightsTarget | None,
    exc: ConnectorError,
    formatter: RedactingFormatter,
    timeout: float,
) -> None:
    if target is None:
        return
    outcome = (
        "the snapshot was not accepted"
        if isinstance(exc, PushError)
        else ("nothing was pushed")
    )
    message = formatter.redact(f"Import failed, {outcome}: {exc}")
    try:
        send_log(target, Level.ALERT, message, timeout=timeout)
    except PushError as log_error:
        logger.warning("could not send the alert to Insights: %s", log_error)


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
