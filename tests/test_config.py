from __future__ import annotations

from pathlib import Path

import pytest

from attribution.config_loader import load_config, parse_override
from attribution.errors import ConfigError
from attribution.schema import DEFAULT_FUNNEL_EVENTS
from tests.conftest import make_conf

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_seeds_rules():
    conf = load_config(None)
    assert conf.events.conversion_events == ["action_place_order", "system_checkout_success"]
    assert conf.events.funnel_events == list(DEFAULT_FUNNEL_EVENTS)
    assert "cart_page_load" in conf.events.funnel_events
    assert conf.session.inactivity_gap_minutes == 30.0
    assert conf.session.max_length == 100
    assert conf.session.min_events == 2
    assert (conf.split.train, conf.split.validation, conf.split.test) == (0.7, 0.1, 0.2)
    assert conf.funnel.exclude is True


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml"])
def test_shipped_configs_load(name):
    conf = load_config(ROOT / "conf" / name)
    assert conf.session.max_length == 100


def test_cluster_config_maps_warehouse_columns():
    conf = load_config(ROOT / "conf" / "cluster.yaml")
    assert conf.input.columns.user_id == "consumer_id"
    assert conf.input.format == "table"
    assert conf.spark.master is None  # spark-submit sets it


def test_set_overrides_are_typed_from_yaml():
    conf = load_config(None, ["session.max_length=50", "funnel.exclude=false", "split.salt=abc=def"])
    assert conf.session.max_length == 50
    assert conf.funnel.exclude is False
    assert conf.split.salt == "abc=def"  # only the first '=' separates key from value


def test_set_list_value():
    conf = load_config(None, ["events.conversion_events=[order_done]"])
    assert conf.events.conversion_events == ["order_done"]


def test_int_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["session.inactivity_gap_minutes=45"]).session.inactivity_gap_minutes == 45.0
    with pytest.raises(ConfigError, match=r"session\.max_length: expected int, found float 2\.5"):
        load_config(None, ["session.max_length=2.5"])


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key session\.max_lenght"):
        load_config(None, ["session.max_lenght=10"])


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"unknown key sesion"):
        load_config(None, ["sesion.max_length=10"])


def test_wrong_type_names_key_and_types():
    with pytest.raises(ConfigError, match=r"funnel\.exclude: expected bool, found str 'maybe'"):
        load_config(None, ["funnel.exclude=maybe"])


def test_wrong_type_in_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("session:\n  min_events: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"session\.min_events: expected int, found list"):
        load_config(f)


def test_null_for_required_value():
    with pytest.raises(ConfigError, match=r"input\.columns\.user_id: a value is required"):
        load_config(None, ["input.columns.user_id=null"])


def test_section_given_a_scalar():
    with pytest.raises(ConfigError, match=r"session: expected a mapping"):
        load_config(None, ["session=3"])


def test_split_must_sum_to_one():
    with pytest.raises(ConfigError, match=r"split: train \+ validation \+ test must be 1, found 1\.1"):
        load_config(None, ["split.train=0.8"])


def test_bad_choice_and_time_zone():
    with pytest.raises(ConfigError, match=r"input\.format: 'xlsx' is not one of"):
        load_config(None, ["input.format=xlsx"])
    with pytest.raises(ConfigError, match=r"input\.time_zone: 'Mars/Olympus' is not a known time zone"):
        load_config(None, ["input.time_zone=Mars/Olympus"])


def test_cross_field_rules():
    with pytest.raises(ConfigError, match=r"session\.max_length: must be >= session\.min_events"):
        load_config(None, ["session.min_events=5", "session.max_length=3"])
    with pytest.raises(ConfigError, match=r"event_feature' needs input\.columns\.discovery_feature"):
        load_config(None, ["events.event_type_label=event_feature", "input.columns.discovery_feature=null"])
    with pytest.raises(ConfigError, match=r"train: .*embedding_ridge, context_ridge and warmup_steps >= 0"):
        load_config(None, ["train.embedding_ridge=-1"])
    for bad in ("train.context_ridge=-1", "train.context_lr_scale=0", "train.context_full_sessions=0"):
        with pytest.raises(ConfigError, match=r"train: learning_rate, context_lr_scale, context_full_sessions and"):
            load_config(None, [bad])
    for bad in ("train.min_improvement=-0.01", "train.min_improvement=1"):
        with pytest.raises(ConfigError, match=r"train.min_improvement: must be >= 0 and < 1"):
            load_config(None, [bad])
    assert load_config(None, ["train.min_improvement=0"]).train.min_improvement == 0
    with pytest.raises(ConfigError, match=r"train.schedule: 'linear' is not one of cosine, plateau, average"):
        load_config(None, ["train.schedule=linear"])
    with pytest.raises(ConfigError, match=r"train.average_epochs: must be > 0, not 0"):
        load_config(None, ["train.average_epochs=0"])
    with pytest.raises(ConfigError, match=r"train.decay_epochs"):
        load_config(None, ["train.decay_epochs=0"])


def test_faithfulness_settings_are_checked():
    with pytest.raises(ConfigError, match=r"faithfulness\.k_fractions: \[0\.1, 1\.5\]: each must be in \(0, 1\]"):
        load_config(None, ["faithfulness.k_fractions=[0.1, 1.5]"])
    with pytest.raises(ConfigError, match=r"faithfulness\.k_events: \[0, 3\]: each must be >= 1"):
        load_config(None, ["faithfulness.k_events=[0, 3]"])
    with pytest.raises(ConfigError, match=r"at least one k is required"):
        load_config(None, ["faithfulness.k_events=[]", "faithfulness.k_fractions=[]"])
    with pytest.raises(ConfigError, match=r"faithfulness\.max_sessions, deletion_steps and random_draws"):
        load_config(None, ["faithfulness.random_draws=0"])
    with pytest.raises(ConfigError, match=r"report\.default_method: 'integrated_gradients' is not in"):
        load_config("conf/local.yaml", ["attribution.methods=[grad_x_input]"])


def test_the_benchmarks_grad_x_input_only_overrides_load_on_the_embedded_default():
    # bench_attribute and bench_report run the stage with the cheapest method only; the embedded
    # default's report method (integrated gradients) must be moved with it, or `make bench` stops here.
    from bench.bench_attribute import GRAD_X_INPUT_ONLY

    conf = load_config("conf/local.yaml", GRAD_X_INPUT_ONLY)
    assert conf.attribution.methods == ["grad_x_input"] and conf.report.default_method == "grad_x_input"


def test_missing_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        parse_override("no-equals-sign")


def test_output_paths_resolve_under_output_dir():
    conf = load_config(None, ["run.output_dir=/tmp/x"])
    assert conf.output("sessions") == "/tmp/x/sessions"
    assert conf.output("s3://b/sessions") == "s3://b/sessions"


def test_set_into_a_mapping_keeps_dotted_keys_whole():
    conf = load_config(ROOT / "conf" / "local.yaml", ["spark.conf.spark.driver.memory=8g", "input.options.header=true"])
    assert conf.spark.conf["spark.driver.memory"] == "8g"
    assert conf.spark.conf["spark.ui.enabled"] == "false"  # the file's other keys stay
    assert conf.input.options == {"header": "true"}


def test_manifest_redacts_credentials():
    from attribution.config import redacted

    conf = make_conf(
        "spark.conf.spark.hadoop.fs.s3a.secret.key=abc123",
        "spark.conf.spark.hadoop.fs.s3a.access.key=AKIAXYZ",
        "input.options.password=hunter2",
        "spark.conf.spark.sql.shuffle.partitions=8",
    )
    text = str(redacted(conf.to_dict()))
    for secret in ("abc123", "AKIAXYZ", "hunter2"):
        assert secret not in text
    assert redacted(conf.to_dict())["spark"]["conf"]["spark.sql.shuffle.partitions"] == "8"


def test_locations_a_stage_replaces_can_not_delete_other_outputs_or_the_input(tmp_path):
    out = f"run.output_dir={tmp_path}/out"
    with pytest.raises(ConfigError, match=r"sessions.sessions_path: '\.' is the output directory"):
        make_conf(out, "sessions.sessions_path=.")
    with pytest.raises(ConfigError, match=r"attribution.output_path: '\.\./elsewhere' must not contain '\.\.'"):
        make_conf(out, "attribution.output_path=../elsewhere")
    with pytest.raises(ConfigError, match=r"sessions.quarantine_path: 'q' holds train.model_path \('q/model'\)"):
        make_conf(out, "sessions.quarantine_path=q", "train.model_path=q/model")
    with pytest.raises(ConfigError, match=r"sessions.sessions_path: .* holds input.path"):
        make_conf(out, f"sessions.sessions_path={tmp_path}/data", f"input.path={tmp_path}/data/events")
    with pytest.raises(ConfigError, match="run.output_dir: a directory is required"):
        make_conf("run.output_dir='  '")
    # the generator writes the input it is meant to produce: that overlap is the point
    make_conf(out, f"generate.output_path={tmp_path}/raw", f"input.path={tmp_path}/raw")


@pytest.mark.parametrize("run_id", ["a/b", "../x", "r 1", "", "x" * 129, "-r"])
def test_run_ids_that_would_break_paths_are_refused(run_id):
    with pytest.raises(ConfigError, match="run.run_id: .* must be 1-128 letters, digits"):
        make_conf(f"run.run_id={run_id}")


def test_output_paths_under_a_uri_keep_its_double_slash():
    conf = make_conf("run.output_dir=s3://bucket/attr/")
    assert conf.output("sessions") == "s3://bucket/attr/sessions"
    assert conf.output("hdfs://nn/x") == "hdfs://nn/x" and conf.output("/abs/x") == "/abs/x"


def test_a_relative_output_dir_is_made_absolute_on_the_driver_or_refused(spark, tmp_path, monkeypatch):
    """Executors run in working directories of their own: a relative output directory must name the
    driver's. With HDFS as the default filesystem a path without a scheme would mean one place to Spark
    and another to the Python readers, so it is refused."""
    from attribution.spark import qualify_output_dir

    monkeypatch.chdir(tmp_path)
    qualified = qualify_output_dir(spark, make_conf("run.output_dir=out"))
    assert qualified.run.output_dir == str(tmp_path / "out")
    assert qualified.output("model") == str(tmp_path / "out" / "model")
    uri = make_conf("run.output_dir=s3://bucket/attr")
    assert qualify_output_dir(spark, uri) is uri
    spark.conf.set("spark.hadoop.fs.defaultFS", "hdfs://nn:8020")
    try:
        with pytest.raises(
            ConfigError,
            match=r"run.output_dir: 'out' has no scheme and the default filesystem is "
            r"hdfs://nn:8020.*hdfs://nn:8020/out",
        ):
            qualify_output_dir(spark, make_conf("run.output_dir=out"))
        with pytest.raises(ConfigError, match="has no scheme"):
            qualify_output_dir(spark, make_conf("run.output_dir=/data/out"))
    finally:
        spark.conf.unset("spark.hadoop.fs.defaultFS")
