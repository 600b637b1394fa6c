"""What each stage's ``run`` returns: a typed result per stage.

Every result carries ``summary``, the document the stage wrote (``sessionize_summary.json``,
``model/metrics.json``, ...) and the pipeline's ``manifest.json`` keeps, beside the fields its callers
read, typed. :meth:`StageResult.manifest_entry` is what the manifest keeps of it and
:meth:`StageResult.text` what its job prints, so the pipeline runs every stage the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attribution.report_text import (
    format_attribute_summary,
    format_faithfulness_summary,
    format_sessionize_summary,
    format_train_metrics,
)


@dataclass(frozen=True)
class StageResult:
    """A stage's result: ``summary``, the document it wrote."""

    summary: dict[str, Any]

    def manifest_entry(self) -> dict[str, Any]:
        """What ``manifest.json`` keeps of the stage."""
        return self.summary

    def text(self) -> str:
        """What the stage's job prints."""
        raise NotImplementedError


@dataclass(frozen=True)
class GenerateResult(StageResult):
    """The embedded dataset written: its raw rows and the dirty rows planted among them, by kind."""

    rows: int = 0
    planted_dirty_rows: dict[str, int] = field(default_factory=dict)
    output_path: str = ""

    def text(self) -> str:
        return f"{self.rows:,} raw events -> {self.output_path}"

    def manifest_entry(self) -> dict[str, Any]:
        return {"rows": self.rows}


@dataclass(frozen=True)
class SessionizeResult(StageResult):
    """The sessions table and the quarantine written; ``summary`` reconciles every row read."""

    sessions_path: str = ""
    quarantine_path: str = ""

    def text(self) -> str:
        return format_sessionize_summary(self.summary)


@dataclass(frozen=True)
class TrainStageResult(StageResult):
    """The model directory written; ``summary`` is its ``metrics.json`` (with, in day mode, the version and
    whether it became the latest)."""

    model_path: str = ""
    sha256: str = ""
    test_roc_auc: float = float("nan")
    version: str | None = None

    def text(self) -> str:
        return format_train_metrics(self.summary, self.model_path)

    def manifest_entry(self) -> dict[str, Any]:
        return {k: v for k, v in self.summary.items() if k not in ("history", "vocabulary")}


@dataclass(frozen=True)
class AttributeResult(StageResult):
    """The event table written at ``output``: ``events`` rows for ``sessions`` sessions."""

    output: str = ""
    sessions: int = 0
    events: int = 0

    def text(self) -> str:
        return format_attribute_summary(self.summary)


@dataclass(frozen=True)
class FaithfulnessResult(StageResult):
    """The faithfulness tables written (``outputs``: name -> location) and the most faithful method by each
    criterion (empty when no method could be evaluated)."""

    most_faithful: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return format_faithfulness_summary(self.summary)


@dataclass(frozen=True)
class ReportResult(StageResult):
    """The report's tables, picture and page written (``outputs``: name -> location), the insights text
    and, on the synthetic data, the checks against the planted truth."""

    insights: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    ground_truth: dict[str, Any] | None = None
    output_dir: str = ""

    def text(self) -> str:
        return f"{self.insights}\nwrote {len(self.outputs)} outputs under {self.output_dir}/"

    def manifest_entry(self) -> dict[str, Any]:
        return {k: v for k, v in self.summary.items() if k != "insights"}


@dataclass(frozen=True)
class ExplainResult:
    """One session explained: the ranked table as text and the picture's location."""

    table: str
    picture: str
