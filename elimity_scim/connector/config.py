"""Options and settings declared in a manifest, resolved from file and environment.

A manifest lists ``configuration`` (what an Insights admin fills in) and
``settings`` (operational knobs with defaults). Values come from a JSON file, then
``ELIMITY_<SOURCE>_<KEY>`` environment variables, then ``--set key=value`` for
settings only; each later layer wins. Secrets may come from a file named by the
environment variable with ``_FILE`` appended, and never from the command line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from elimity_scim.connector.errors import ConfigurationError

TYPES = frozenset({"string", "secret", "integer", "boolean", "file"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class OptionSpec:
    """One declared option or setting of a manifest."""

    key: str
    name: str
    type: str
    optional: bool
    default: object
    is_setting: bool
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    @property
    def secret(self) -> bool:
        """Whether the value must never be shown."""
        return self.type == "secret"


def option_specs(manifest: Mapping[str, object]) -> list[OptionSpec]:
    """Return the options, then the settings, declared by a manifest."""
    specs = [
        _spec(raw, is_setting=False) for raw in _entries(manifest, "configuration")
    ]
    specs += [_spec(raw, is_setting=True) for raw in _entries(manifest, "settings")]
    keys = [spec.key for spec in specs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        msg = f"manifest declares {', '.join(duplicates)} more than once"
        raise ConfigurationError(msg)
    return specs


def env_name(source: str, key: str) -> str:
    """Return the environment variable for a key: ``pageSize`` -> ``..._PAGE_SIZE``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).upper()
    return f"ELIMITY_{source.upper()}_{snake}"


def resolve(
    manifest: Mapping[str, object],
    *,
    config_file: Path | None,
    environ: Mapping[str, str],
    overrides: Sequence[str] = (),
) -> dict[str, object]:
    """Return every option and setting of a manifest, validated and defaulted."""
    source = str(manifest.get("id", ""))
    specs = {spec.key: spec for spec in option_specs(manifest)}
    raw: dict[str, tuple[object, str]] = {}
    if config_file is not None:
        raw.update(_from_file(config_file, specs))
    raw.update(_from_environ(source, specs, environ))
    raw.update(_from_overrides(overrides, specs))

    values: dict[str, object] = {}
    for key, spec in specs.items():
        if key in raw:
            value, origin = raw[key]
            values[key] = coerce(spec, value, origin)
        else:
            values[key] = None
        if values[key] is None:
            values[key] = _default(spec, source)
    return values


def secret_values(
    manifest: Mapping[str, object], values: Mapping[str, object]
) -> list[str]:
    """Return the resolved secret values, so that logs can redact them."""
    specs = option_specs(manifest)
    found = [values.get(spec.key) for spec in specs if spec.secret]
    return [value for value in found if isinstance(value, str) and value]


def _entries(manifest: Mapping[str, object], name: str) -> list[Mapping[str, object]]:
    entries = manifest.get(name, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        msg = f"manifest {name!r} must be a list of objects"
        raise ConfigurationError(msg)
    return entries


def _spec(raw: Mapping[str, object], *, is_setting: bool) -> OptionSpec:
    key, name, kind = raw.get("key"), raw.get("name"), raw.get("type")
    if not isinstance(key, str) or not isinstance(name, str) or kind not in TYPES:
        msg = f"manifest entry {raw.get('key')!r} needs a key, a name and a known type"
        raise ConfigurationError(msg)
    optional = bool(raw.get("optional", False))
    if is_setting and not (optional and "default" in raw):
        msg = f"manifest setting {key!r} must be optional and have a default"
        raise ConfigurationError(msg)
    minimum, maximum = raw.get("minimum"), raw.get("maximum")
    choices = raw.get("choices", [])
    return OptionSpec(
        key=key,
        name=name,
        type=str(kind),
        optional=optional,
        default=raw.get("default"),
        is_setting=is_setting,
        minimum=minimum if isinstance(minimum, int) else None,
        maximum=maximum if isinstance(maximum, int) else None,
        choices=tuple(str(c) for c in choices) if isinstance(choices, list) else (),
    )


def _from_file(
    path: Path, specs: Mapping[str, OptionSpec]
) -> dict[str, tuple[object, str]]:
    try:
        data: object = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read config file {path}: {exc.strerror}"
        raise ConfigurationError(msg) from exc
    except ValueError as exc:
        msg = f"config file {path} is not valid JSON: {exc}"
        raise ConfigurationError(msg) from exc
    if not isinstance(data, dict):
        msg = f"config file {path} must hold a JSON object"
        raise ConfigurationError(msg)
    unknown = sorted(set(data) - set(specs))
    if unknown:
        known = ", ".join(specs)
        msg = f"config file {path} has unknown key(s) {', '.join(unknown)}; "
        msg += f"known keys: {known}"
        raise ConfigurationError(msg)
    return {key: (value, f"config file key {key!r}") for key, value in data.items()}


def _from_environ(
    source: str, specs: Mapping[str, OptionSpec], environ: Mapping[str, str]
) -> dict[str, tuple[object, str]]:
    found: dict[str, tuple[object, str]] = {}
    for key, spec in specs.items():
        name = env_name(source, key)
        file_name = f"{name}_FILE"
        if spec.secret and environ.get(file_name):
            if environ.get(name):
                msg = f"set either {name} or {file_name}, not both"
                raise ConfigurationError(msg)
            found[key] = (_read_secret_file(file_name, environ[file_name]), file_name)
        elif name in environ:
            found[key] = (environ[name], name)
    return found


def _read_secret_file(variable: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the file named by {variable}: {exc.strerror}"
        raise ConfigurationError(msg) from exc
    return text.rstrip("\r\n")


def _from_overrides(
    overrides: Sequence[str], specs: Mapping[str, OptionSpec]
) -> dict[str, tuple[object, str]]:
    found: dict[str, tuple[object, str]] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        spec = specs.get(key)
        if not sep or spec is None or not spec.is_setting:
            settings = ", ".join(k for k, s in specs.items() if s.is_setting)
            msg = f"--set takes setting=value with one of: {settings}"
            if spec is not None and not spec.is_setting:
                msg = f"--set only takes settings; {key!r} is an option"
            raise ConfigurationError(msg)
        found[key] = (value, f"--set {key}")
    return found


def coerce(spec: OptionSpec, value: object, origin: str) -> object:
    """Validate one raw value of an option or setting; ``origin`` names its source."""
    shown = "(hidden)" if spec.secret else repr(value)
    if isinstance(value, str) and value == "" and spec.optional:
        return None
    if spec.type in ("string", "secret", "file"):
        if not isinstance(value, str):
            msg = f"{origin}: {spec.name} must be a string"
            raise ConfigurationError(msg)
        if value == "":
            msg = f"{origin}: {spec.name} must not be empty"
            raise ConfigurationError(msg)
        if spec.choices and value not in spec.choices:
            msg = f"{origin}: {spec.name} is {shown}; expected one of "
            msg += ", ".join(spec.choices)
            raise ConfigurationError(msg)
        if spec.type == "file" and not Path(value).is_file():
            msg = f"{origin}: {spec.name} names no readable file: {value}"
            raise ConfigurationError(msg)
        return value
    if spec.type == "boolean":
        return _boolean(spec, value, origin, shown)
    return _integer(spec, value, origin, shown)


def _boolean(spec: OptionSpec, value: object, origin: str, shown: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    msg = f"{origin}: {spec.name} is {shown}; expected true or false"
    raise ConfigurationError(msg)


def _integer(spec: OptionSpec, value: object, origin: str, shown: str) -> int:
    number: int | None = None
    whole_float = (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )
    digits = isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value)
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float | str) and (whole_float or digits):
        number = int(value)
    if number is None:
        msg = f"{origin}: {spec.name} is {shown}; expected a whole number"
        raise ConfigurationError(msg)
    too_small = spec.minimum is not None and number < spec.minimum
    too_large = spec.maximum is not None and number > spec.maximum
    if too_small or too_large:
        msg = f"{origin}: {spec.name} is {number}; expected {spec.minimum} to "
        msg += f"{spec.maximum}"
        raise ConfigurationError(msg)
    return number


def _default(spec: OptionSpec, source: str) -> object:
    if spec.optional:
        return spec.default
    name = env_name(source, spec.key)
    where = f"{name} or {name}_FILE" if spec.secret else name
    msg = f"missing required option {spec.name} ({spec.key}): set {where}"
    msg += f" or {spec.key!r} in the config file"
    raise ConfigurationError(msg)
