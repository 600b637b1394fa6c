"""The page and the console text read back for their numbers (attribution/page.py, attribution/report_text.py):
hand-built tables whose every figure is known, so the pp scaling, the CIs, the order, the quotable figure,
the sign marks and the escaping are checked against values computed here, not against a run."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd
import pytest

from attribution import aggregate, page, report_text

METHOD = "grad_x_input"
# 20 of 100 test sessions converted: the ≈ pp scale is 100 x 0.2 x 0.8 = 16 pp per log-odds
STATUS = {
    "status": "ok",
    "test_roc_auc": 0.8,
    "test_roc_auc_ci": [0.75, 0.85],
    "test_sessions": 100,
    "test_positives": 20,
}
SCALE = 16.0


class Cells(HTMLParser):
    """Every table's rows as lists of cell texts (entities decoded), keyed by the id of the enclosing div."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.paragraphs: dict[str, str] = {}
        self._div: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._p: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("id"):
            self._div = a["id"]
            self.tables[self._div] = []
        elif tag == "tr" and self._div:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "p" and (a.get("id") or a.get("class")):
            self._p = (a.get("id") or a["class"], [])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._div:
            self.tables[self._div].append(self._row)
            self._row = None
        elif tag == "div":
            self._div = None
        elif tag == "p" and self._p is not None:
            key, text = self._p
            self.paragraphs.setdefault(key, "")
            self.paragraphs[key] += "".join(text)
            self._p = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._p is not None:
            self._p[1].append(data)


def _row(key: dict, effect: float, low: float, high: float, removal: tuple | None, events: int = 50) -> dict:
    verdict = aggregate.DRIVES if low > 0 else aggregate.HOLDS_BACK if high < 0 else aggregate.NOISE
    r = {
        "method": METHOD,
        **key,
        "effect_log_odds": effect,
        "effect_ci_low": low,
        "effect_ci_high": high,
        "effect_verdict": verdict,
        "events": events,
        "sessions": 40,
    }
    if removal is not None:
        r["removal_effect_pp"], r["removal_ci_low_pp"], r["removal_ci_high_pp"] = removal
    return r


def _tables(with_removal: bool = True) -> dict[str, pd.DataFrame]:
    def rm(*v):
        return v if with_removal else None

    event_type = pd.DataFrame(
        [
            # a driver whose removal agrees
            {
                **_row({"event_type": "search"}, 0.25, 0.10, 0.40, rm(3.5, 2.0, 5.0)),
                "removal_transformer_pp": 3.0,
                "removal_baseline_pp": 5.1,
            },
            # the strongest driver, with a name to escape, whose removal effect is below 0 with a CI
            # below 0: the two disagree, the row is marked
            _row({"event_type": "<b>card</b> & co"}, 0.50, 0.30, 0.70, rm(-1.2, -2.0, -0.4)),
            # a weak driver whose removal is negative but crosses 0, as the effect's CI does not:
            # the effect's CI alone excludes 0, so this is marked too
            _row({"event_type": "tab"}, 0.05, 0.01, 0.09, rm(-0.3, -0.9, 0.3)),
            # a detractor whose removal agrees
            _row({"event_type": "background"}, -0.30, -0.45, -0.15, rm(-2.0, -3.0, -1.0)),
            # noise on both with opposite signs: not a disagreement
            _row({"event_type": "home"}, 0.02, -0.05, 0.09, rm(-0.1, -0.5, 0.3)),
        ]
    )
    position = pd.DataFrame(
        [
            {**_row({"position_bin": "1-5"}, 0.10, 0.05, 0.15, rm(4.0, 3.0, 5.0)), "mean_abs_effect_log_odds": 0.2},
            {**_row({"position_bin": "6-10"}, -0.04, -0.06, -0.02, rm(2.0, 1.0, 3.0)), "mean_abs_effect_log_odds": 0.1},
        ]
    )
    store = pd.DataFrame(
        [
            {
                "method": METHOD,
                "rank": 1,
                "store_name": "Pizza <Place>",
                "shrunk_net_effect_log_odds": 0.2,
                "net_effect_log_odds": 0.3,
                "net_effect_ci_low": 0.1,
                "net_effect_ci_high": 0.5,
                "sessions": 30,
                "events": 45,
                "effect_verdict": aggregate.DRIVES,
                **(
                    {"removal_effect_pp": 1.5, "removal_ci_low_pp": 0.5, "removal_ci_high_pp": 2.5}
                    if with_removal
                    else {}
                ),
            }
        ]
    )
    return {"event_type": event_type, "position": position, "store": store}


def _parse(tables, faithful=None) -> tuple[str, Cells]:
    html = page.render(tables, METHOD, STATUS, faithful, b"", "run-1").decode()
    cells = Cells()
    cells.feed(html)
    return html, cells


def test_the_page_table_cells_hold_the_quotable_figure_the_scaled_pp_the_cis_the_order_and_the_marks():
    html, cells = _parse(_tables())
    head, *rows = cells.tables["drivers"]
    assert head[:2] == ["event type", "removal effect, pp [95% CI]: quote this"]
    by_type = {r[0]: r for r in rows}
    # drivers strongest effect first: 0.50, 0.25, 0.05; the detractor and the noise are not drivers
    assert [r[0] for r in rows] == ["<b>card</b> & co", "search", "tab"]
    # the removal cell as published, then the effect, its CI and the effect x 16 pp with its CI x 16
    assert by_type["search"][1:5] == [
        "+3.50 pp [+2.00, +5.00]",
        "+0.250",
        "[+0.100, +0.400]",
        "+4.00 pp [+1.60, +6.40]",
    ]
    assert by_type["<b>card</b> & co"][1:5] == [
        "-1.20 pp [-2.00, -0.40]",
        "+0.500",
        "[+0.300, +0.700]",
        "+8.00 pp [+4.80, +11.20]",
    ]
    assert by_type["search"][5:7] == ["50", "40"]
    # the two models' own removal effects beside the note ('-' where the row has none)
    assert head[-2] == page.BASELINE_REMOVAL_HEAD
    assert by_type["search"][-2] == "+3.00 / +5.10 pp" and by_type["tab"][-2] == "-"
    # the marks: disagreeing signs with a CI that excludes 0 on one side at least
    marks = {r[0]: r[-1] for r in rows}
    assert marks == {"<b>card</b> & co": report_text.SIGN_MARK, "search": "", "tab": report_text.SIGN_MARK}
    assert cells.tables["detractors"][1][0] == "background" and cells.tables["detractors"][1][-1] == ""
    assert "Indistinguishable from noise: home" in html
    # the names are escaped: no tag from the data reaches the page
    assert "<b>card</b>" not in html and "&lt;b&gt;card&lt;/b&gt; &amp; co" in html
    assert "Pizza <Place>" not in html and cells.tables["stores"][1][1] == "Pizza <Place>"
    # positions: 6-10 pushes down per event (CI below 0) and has a removal effect above 0: marked
    positions = {r[0]: r for r in cells.tables["positions"][1:]}
    assert positions["6-10"][-1] == report_text.SIGN_MARK and positions["1-5"][-1] == ""
    assert positions["6-10"][4] == "-0.64 pp [-0.96, -0.32]"
    # the store: the removal cell, the shrunk effect, the raw effect x 16
    store = cells.tables["stores"][1]
    assert store[2:7] == ["+1.50 pp [+0.50, +2.50]", "+0.200", "+0.300", "[+0.100, +0.500]", "+4.80 pp [+1.60, +8.00]"]
    assert store[-1] == ""
    assert cells.paragraphs["quotable"] == report_text.QUOTABLE
    assert cells.paragraphs["sign-note"].startswith(report_text.SIGN_NOTE)


def test_without_removal_effects_the_page_says_which_figure_to_quote_and_marks_nothing():
    html, cells = _parse(_tables(with_removal=False))
    assert cells.paragraphs["quotable"] == report_text.NO_REMOVAL_QUOTABLE
    rows = cells.tables["drivers"][1:]
    assert {r[1] for r in rows} == {"-"} and {r[-1] for r in rows} == {""}
    assert "sign-note" not in cells.paragraphs


@pytest.mark.parametrize("beats", [True, False])
def test_the_faithfulness_sentence_says_what_each_criterion_measures(beats):
    verdict = {"by_comprehensiveness": "integrated_gradients", "by_sufficiency": "attention", "beats_random": beats}
    _, cells = _parse(_tables(), verdict)
    text = cells.paragraphs["faithful"]
    comp, suff = text.split(" by comprehensiveness", 1)[1].split(", attention by sufficiency", 1)
    assert text.startswith("Most faithful on this data: integrated_gradients")
    assert "removing the events it ranks first moves the model's prediction the most" in comp
    assert "kept alone, keep the prediction closest" in suff and "removing" not in suff
    assert ("not distinguishable from a random order" in comp) is not beats


def test_the_insights_mark_the_same_rows_and_say_why_once():
    text = report_text.key_insights(_tables(), METHOD, status=STATUS)
    lines = text.splitlines()
    marked = [line.split()[0] for line in lines if line.endswith(report_text.SIGN_MARK)]
    # the card row's name has spaces: its first word; the position row, by its bin
    assert marked == ["<b>card</b>", "tab", "6-10"]
    assert lines.count(report_text.SIGN_NOTE) == 1 and report_text.QUOTABLE in lines
    search = next(line for line in lines if line.strip().startswith("search"))
    assert search.endswith("(50 events, 40 sessions; removal effect +3.50 pp [+2.00, +5.00])")
    plain = report_text.key_insights(_tables(with_removal=False), METHOD)
    assert report_text.SIGN_MARK not in plain and report_text.QUOTABLE not in plain


def test_the_stage_summaries_as_text():
    sessionize = {
        "rows_read": 1000,
        "rows": {"sessionized": 900, "funnel_event": 60, "quarantined_bad_timestamp": 40, "dropped_bot": 0},
        "rows_accounted": 1000,
        "sessions": {"total": 120, "kept": 100, "short_session": 15, "bot_like_device_day": 5},
        "kept_sessions_converted": 25,
        "kept_sessions_by_split": {"train": 70, "validation": 15, "test": 15},
    }
    lines = report_text.format_sessionize_summary(sessionize).splitlines()
    assert lines[0] == "sessionize: 1,000 rows read, every one accounted for:"
    # each kind with its share of the rows read; a kind with no rows is left out
    assert lines[1].split() == ["sessionized", "900", "90.00%"] and lines[3].split() == [
        "quarantined_bad_timestamp",
        "40",
        "4.00%",
    ]
    assert not any("dropped_bot" in line for line in lines) and lines[4].split() == ["total", "1,000"]
    assert "100 kept (15 too short, 5 on bot-like device-days); converted 25 (25.0%)" in lines[5]
    assert lines[5].endswith("split train 70 / validation 15 / test 15")

    metrics = {
        "best_epoch": 5,
        "epochs_run": 5,
        "train_sessions_per_second": 1234.4,
        "num_processes": 2,
        "training_seconds": 61.6,
        "still_improving": True,
        "test": {"sessions": 2000, "positive_rate": 0.157, "roc_auc": 0.80123, "pr_auc": 0.5, "log_loss": 0.41},
        "model_sha256": "abcdef0123456789",
    }
    text = report_text.format_train_metrics(metrics, "out/model").splitlines()
    assert text[0] == "train: best epoch 5 of 5, 1,234 sessions/s with 2 process(es), 62s"
    assert text[1] == "test (2,000 sessions, 15.7% converted): ROC-AUC 0.8012, PR-AUC 0.5000, log loss 0.4100"
    assert text[2] == "validation AUC still rising at the last epoch: raise train.epochs"
    assert text[-1] == "model abcdef012345... written to out/model/"
    done = report_text.format_train_metrics({**metrics, "still_improving": False}, "m")
    assert "still rising" not in done
    # the context path's rate, said when a small training set held it under train.context_lr_scale
    rate = {"multiple": 2.5, "scale": 10.0, "full_sessions": 20_000, "train_sessions": 5_000}
    slowed = report_text.format_train_metrics({**metrics, "context_rate": rate}, "m").splitlines()
    assert slowed[3] == (
        "the context path learned at 2.50x the model's rate, not 10x: 5,000 training sessions, "
        "under train.context_full_sessions (20,000)"
    )
    full = {**rate, "multiple": 10.0, "train_sessions": 25_000}
    assert "context path" not in report_text.format_train_metrics({**metrics, "context_rate": full}, "m")

    faith = {
        "sessions": 300,
        "methods": ["grad_x_input", "attention"],
        "random_draws": 5,
        "k": ["1", "3"],
        "seconds": 9.4,
        "aopc": {
            "grad_x_input": {"comprehensiveness": 0.12345, "random": 0.05},
            "attention": {"comprehensiveness": 0.04, "random": 0.05},
        },
        "most_faithful": {"by_comprehensiveness": "grad_x_input", "by_sufficiency": "attention", "beats_random": False},
        "agreement_median_spearman": {"grad_x_input vs attention": 0.25},
    }
    lines = report_text.format_faithfulness_summary(faith).splitlines()
    assert (
        lines[0]
        == "faithfulness: 300 sessions, methods grad_x_input, attention, each against 5 random orders; k = 1, 3; 9s"
    )
    assert lines[2].split() == ["grad_x_input", "0.1235", "(random", "0.0500)"]
    assert lines[4] == (
        "most faithful on this data: grad_x_input by comprehensiveness - but not distinguishable from a random "
        "order; attention by sufficiency"
    )
    assert lines[5] == "median per-session Spearman: grad_x_input vs attention +0.25"


def test_the_reliability_curve_on_the_page():
    """The test split's reliability bins from the model's metrics (attribution/report.model_status) as a
    table: bounds, sessions, mean prediction and rate, in the bins' order; none without them."""
    bins = [
        {"low": 0.0, "high": 0.1, "sessions": 1200, "mean_prediction": 0.0512, "positive_rate": 0.0433},
        {"low": 0.3, "high": 0.4, "sessions": 45, "mean_prediction": 0.3471, "positive_rate": 0.4},
    ]
    html = page.render(_tables(), METHOD, {**STATUS, "test_reliability": bins}, None, b"", "r").decode()
    cells = Cells()
    cells.feed(html)
    assert cells.tables["reliability"] == [
        ["predicted P(convert)", "test sessions", "mean prediction", "conversion rate"],
        ["0.0-0.1", "1,200", "0.051", "0.043"],
        ["0.3-0.4", "45", "0.347", "0.400"],
    ]
    assert "reliability" not in _parse(_tables())[1].tables


def test_the_top_drivers_attributable_conversions_and_what_they_count():
    """The strongest driver (the card row, effect 0.50) with 12.6 attributable conversions over its 40
    sessions: the sentence names it, rounds the count and says it counts the scored sessions only."""
    tables = _tables()
    tables["event_type"]["attributable_conversions"] = [1.4, 12.6, 0.2, -0.8, 0.0]
    _, cells = _parse(tables)
    text = cells.paragraphs["attributable"]
    assert text.startswith("<b>card</b> & co: the model predicts about 13 more conversions among the 40 scored")
    assert "not a day's traffic" in text
    assert "attributable" not in _parse(_tables())[1].paragraphs  # no column, no sentence
