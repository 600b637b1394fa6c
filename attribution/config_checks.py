"""The configuration's checks that span sections or read a registry: the attribution methods
(:mod:`attribution.methods`), the generator's scenarios (:mod:`attribution.scenarios`), the report's
method among the attributed ones, and the output locations' overwrite policy. Each section's own checks
are its ``check()`` in :mod:`attribution.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from attribution import methods, scenarios
from attribution.config import Config
from attribution.errors import ConfigError


def check(conf: Config) -> None:
    """Every check across sections; :func:`attribution.config_loader.load_config` runs it after the
    sections' own."""
    g = conf.generate
    if g.scenario not in scenarios.SCENARIOS:
        raise ConfigError(f"generate.scenario: {g.scenario!r} is not one of {', '.join(scenarios.SCENARIOS)}")
    if g.effects not in scenarios.EFFECTS:
        raise ConfigError(f"generate.effects: {g.effects!r} is not one of {', '.join(scenarios.EFFECTS)}")
    if g.effects == "spread" and g.n_stores < scenarios.SPREAD_MIN_STORES:
        raise ConfigError(
            f"generate.effects=spread plants stores up to popularity rank {scenarios.SPREAD_MIN_STORES - 1}; "
            f"generate.n_stores must be >= {scenarios.SPREAD_MIN_STORES}, not {g.n_stores}"
        )
    if conf.events.event_type_label == "event_feature" and conf.input.columns.discovery_feature is None:
        raise ConfigError("events.event_type_label: 'event_feature' needs input.columns.discovery_feature")
    known = methods.names()
    bad = [x for x in conf.attribution.methods if x not in known]
    if bad:
        raise ConfigError(f"attribution.methods: {bad}; choose from {', '.join(known)}")
    r, a = conf.report, conf.attribution
    if r.default_method not in a.methods:
        raise ConfigError(
            f"report.default_method: {r.default_method!r} is not in attribution.methods ({', '.join(a.methods)}); "
            "add it to the methods, or set report.default_method to one of them"
        )
    if conf.tracking.model_alias is not None and conf.train.model_version is not None:
        raise ConfigError(
            f"tracking.model_alias ({conf.tracking.model_alias!r}) and train.model_version "
            f"({conf.train.model_version!r}) each choose the model: set one"
        )
    check_paths(conf)


# Locations a stage replaces whole: Spark's overwrite deletes whatever is there first.
REPLACED_PATHS = (
    "generate.output_path",
    "sessions.sessions_path",
    "sessions.quarantine_path",
    "train.shards_path",
    "attribution.output_path",
    "faithfulness.sessions_path",
)
# Every other location the config names (read, or written file by file).
OTHER_PATHS = (
    "input.path",
    "stores.path",
    "generate.stores_path",
    "generate.ground_truth_path",
    "sessions.summary_path",
    "train.model_path",
    "attribution.delta_path",
    "attribution.csv_path",
    "attribution.summary_path",
    "faithfulness.summary_path",
    "report.output_path",
)


def check_paths(conf: Config) -> None:
    """Output locations that a stage replaces whole must not be the output directory itself, escape it
    with '..', or hold another configured location: an overwrite there would delete it."""

    def value(key: str) -> Optional[str]:
        section, name = key.split(".")
        return getattr(getattr(conf, section), name)

    def resolved(key: str) -> Optional[str]:
        v = value(key)
        if v is None:
            return None
        if key in ("input.path", "stores.path") or key.startswith("generate."):
            loc = v  # read and generated locations are used as written (relative to the working dir)
        else:
            loc = conf.output(v)
        if "://" in loc:
            return loc.rstrip("/")
        return str(Path(loc).resolve())

    root = str(Path(conf.run.output_dir).resolve())
    for key in REPLACED_PATHS:
        v = value(key)
        if v is not None and not v.strip():
            raise ConfigError(f"{key}: a location is required")
        if v is not None and "://" not in v and ".." in Path(v).parts:
            raise ConfigError(f"{key}: {v!r} must not contain '..'")
        loc = resolved(key)
        if loc is None:
            continue
        if loc in (root, "/") or root.startswith(loc.rstrip("/") + "/"):
            raise ConfigError(f"{key}: {v!r} is the output directory or holds it; the stage would delete it")
        for other in (*REPLACED_PATHS, *OTHER_PATHS):
            if other == key or (key == "generate.output_path" and other == "input.path"):
                continue  # generate writes the input it is meant to produce
            o = resolved(other)
            if o is not None and (o == loc or o.startswith(loc + "/")):
                raise ConfigError(
                    f"{key}: {v!r} holds {other} ({value(other)!r}); the stage replaces it whole and would delete it"
                )
