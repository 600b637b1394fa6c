"""Loading the configuration: one YAML file (``conf/local.yaml``, ``conf/cluster.yaml``) plus repeatable
``--set dotted.key=value`` overrides, into the frozen dataclasses of :mod:`attribution.config`. Unknown
keys, wrong types and missing required values fail with a :class:`ConfigError` naming the dotted key; then
each section's ``check()`` and the checks across sections (:mod:`attribution.config_checks`) run.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from attribution import config_checks
from attribution.config import Config
from attribution.errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the typed value or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, found {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__} {value!r}")
        # Spark conf and reader options are strings; YAML numbers and booleans are written as Spark expects.
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    if value is None:
        raise ConfigError(f"{key}: a value is required ({_type_name(tp)}), found null")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # run_id: 20250115 is a fine id
        if isinstance(value, _dt.date):  # YAML reads an unquoted 2025-01-15 as a date
            return value.isoformat()
    raise ConfigError(f"{key}: expected {_type_name(tp)}, found {type(value).__name__} {value!r}")


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known keys{' under ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, raw in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(raw, hints[name], key)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` in the raw tree, following the schema: inside a mapping-typed field (spark.conf,
    input.options) the rest of the key is one key, dots and all (``spark.conf.spark.driver.memory``)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"--set {dotted}: empty key segment")
    node: dict[str, Any] = tree
    cls: Any = Config
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        hints = typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
        tp = hints.get(part)
        if tp is not None and typing.get_origin(tp) is dict:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {part} is a value, not a section")
            child[".".join(parts[i + 1 :])] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part} is a value, not a section")
        node = child
        cls = tp if tp is not None and dataclasses.is_dataclass(tp) else None
        i += 1
    node[parts[-1]] = value


_SET_RE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_.]*)=(?P<value>.*)$", re.S)


def parse_override(text: str) -> tuple[str, Any]:
    """``dotted.key=value`` -> (key, YAML-typed value). Only the first '=' separates key from value."""
    match = _SET_RE.match(text)
    if not match:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    raw = match.group("value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {match.group('key')}: value {raw!r} is not valid YAML: {exc}") from exc
    return match.group("key"), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load YAML at ``path`` (None: all defaults), apply ``--set`` overrides, validate, return Config."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        tree = loaded
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    conf = _build(Config, tree, "")
    validate(conf)
    return conf


def validate(conf: Config) -> None:
    """Every check: each section's own, then those across sections. Raises :class:`ConfigError`."""
    conf.check()
    config_checks.check(conf)
