"""Small builders for hand-written inputs."""

from __future__ import annotations

from attribution.sessionize import quarantined_events, sessions_all, valid_events, validated

RAW_SCHEMA = (
    "user_id string, device_id string, event_timestamp string, event_name string, store_id long, "
    "discovery_feature string, event_rank int"
)


def raw_events(spark, rows, schema: str = RAW_SCHEMA):
    """Rows as (user, device, timestamp text, event name[, store, feature, rank])."""
    n = len(schema.split(","))
    padded = [tuple(r) + (None,) * (n - len(r)) for r in rows]
    return spark.createDataFrame(padded, schema)


def sessionize_df(spark, rows, conf, stores=None, schema: str = RAW_SCHEMA):
    checked = validated(raw_events(spark, rows, schema), conf)
    return sessions_all(valid_events(checked), stores, conf)


def quarantine_df(spark, rows, conf, schema: str = RAW_SCHEMA):
    return quarantined_events(validated(raw_events(spark, rows, schema), conf))
