"""Errors shared by the runner and the sources it runs."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit status of ``elimity-connector``, one per kind of outcome."""

    OK = 0
    INTERNAL = 1
    CONFIGURATION = 2
    SOURCE_AUTH = 3
    SOURCE_READ = 4
    PUSH = 5
    PUSH_REFUSED = 6


class ConnectorError(Exception):
    """Base class of every error the runner reports in one line."""

    exit_code = ExitCode.INTERNAL


class ConfigurationError(ConnectorError):
    """A configuration value is missing or invalid."""

    exit_code = ExitCode.CONFIGURATION


class SourceError(ConnectorError):
    """The source failed while reading; nothing may be delivered."""

    exit_code = ExitCode.SOURCE_READ


class SourceAuthError(SourceError):
    """The source's server refused the credentials or the rights they carry."""

    exit_code = ExitCode.SOURCE_AUTH


class SnapshotError(ConnectorError):
    """The source produced a snapshot that does not match its data model."""

    exit_code = ExitCode.SOURCE_READ


class PushError(ConnectorError):
    """Insights did not accept the snapshot or the connector logs."""

    exit_code = ExitCode.PUSH


class PushRefusedError(ConnectorError):
    """A safety guard refused to push a snapshot that looks wrong."""

    exit_code = ExitCode.PUSH_REFUSED
