"""Command-line pieces shared by the runner's commands."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from elimity_scim.connector.errors import ConfigurationError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def add_source_arguments(parser: argparse.ArgumentParser, *, config_help: str) -> None:
    """Add the source name, ``--config``, ``--set`` and ``--log-level``."""
    parser.add_argument("source")
    parser.add_argument("--config", type=Path, help=config_help)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (not an option); repeatable",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="log verbosity (env ELIMITY_LOG_LEVEL; default INFO)",
    )


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """Read a true/false environment variable; unset means false."""
    value = environ.get(name, "").strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    msg = f"{name} must be true or false, not {value!r}"
    raise ConfigurationError(msg)
