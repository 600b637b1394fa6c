"""The embedded default's sessions that the stage benchmarks read: ``make run``'s, sessionized here first
when they are missing."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_CONF = ROOT / "conf" / "local.yaml"
SESSIONS = ROOT / "outputs" / "sessions"  # conf/local.yaml's sessions under make run's outputs/


def ensure_sessions(path: Path | str = SESSIONS) -> None:
    """Generate and sessionize the embedded default (conf/local.yaml, into outputs/) when ``path`` does not
    exist yet."""
    if not Path(path).exists():
        from jobs import pipeline

        pipeline.main(["--conf", str(LOCAL_CONF), "--stages", "generate,sessionize"])
