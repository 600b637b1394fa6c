"""Write docs/config.md: every configuration key, its default and its meaning, read from the config
dataclasses in attribution/config.py (the comment above a field, or beside it, is its meaning), so the
reference can't go stale: ``tests/test_readme.py`` fails when the file differs from what this writes.

    python -m scripts.config_doc            # rewrite docs/config.md
    python -m scripts.config_doc --check    # exit 1 when docs/config.md is out of date
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import tokenize
from pathlib import Path

from attribution import config
from scripts._docgen import write_or_check

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "config.md"
HEADER = """# Configuration reference

Every key of the configuration, with its default in the code (`conf/local.yaml` and `conf/cluster.yaml`
change some of them) and its meaning. A YAML file sets them (`--conf`), `--set section.key=value`
overrides one, and each stage checks them before it starts: a wrong value is one line naming the key,
exit 2. This page is written from `attribution/config.py` by `python -m scripts.config_doc`; a test fails
when it differs.
"""


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the field's comment: the comment lines right above it, then the one beside it."""
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whole line)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), tok.line.strip().startswith("#"))
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above, line = [], item.lineno - 1
            while line in comments and comments[line][1]:
                above.insert(0, comments[line][0])
                line -= 1
            beside = comments.get(item.end_lineno or item.lineno)
            parts = above + ([beside[0]] if beside and not beside[1] else [])
            out[(node.name, item.target.id)] = " ".join(parts)
    return out


def _default(value: object) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, dict) and not value:
        return "`{}`"
    return f"`{json.dumps(value)}`" if isinstance(value, (list, dict, bool)) else f"`{value}`"


def keys() -> list[tuple[str, str, str, object]]:
    """(section, key, meaning, default) for every configuration key, sections in the Config's order."""
    comments = field_comments(Path(config.__file__).read_text())
    rows = []

    def walk(instance: object, prefix: str, section: str) -> None:
        for f in dataclasses.fields(instance):  # type: ignore[arg-type]
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.", section or f.name)
                continue
            rows.append((section, prefix + f.name, comments.get((type(instance).__name__, f.name), ""), value))

    walk(config.Config(), "", "")
    return rows


def render() -> str:
    lines = [HEADER]
    sections: dict[str, list] = {}
    for section, key, meaning, default in keys():
        sections.setdefault(section, []).append((key, meaning, default))
    for section, rows in sections.items():
        doc = " ".join((getattr(config.Config(), section).__doc__ or "").strip().split("\n\n")[0].split())
        lines += [f"## `{section}`", ""] + ([doc, ""] if doc else []) + ["| key | default | meaning |", "|---|---|---|"]
        for key, meaning, default in rows:
            text = meaning.replace("|", "\\|") or "(see the section above)"
            lines.append(f"| `{key}` | {_default(default)} | {text} |")
        lines.append("")
    lines += [
        "## Command-line options",
        "",
        "Every job (`python -m jobs.<job>`, or the same module under `spark-submit`) takes the common options;",
        "some take more.",
        "",
        "| job | option | meaning |",
        "|---|---|---|",
    ]
    for job, option, meaning in cli_options():
        lines.append(f"| {job} | `{option}` | {meaning.replace('|', chr(92) + '|')} |")
    lines.append("")
    return "\n".join(lines)


JOBS = ("generate", "sessionize", "train", "attribute", "faithfulness", "report", "explain", "pipeline")


def cli_options() -> list[tuple[str, str, str]]:
    """(job, option, help) of every job's command line: the common options once (job ``every job``), then
    each job's own."""
    import importlib

    from jobs import _cli

    common = _cli.parser("")
    seen = {a.dest for a in common._actions}
    rows = [("every job", ", ".join(a.option_strings), a.help or "") for a in common._actions if a.option_strings]
    for job in JOBS:
        module = importlib.import_module(f"jobs.{job}")
        extra = getattr(module, "_args", None)
        if extra is None:
            continue
        p = _cli.parser("")
        extra(p)
        for a in p._actions:
            if a.dest not in seen and a.option_strings:
                rows.append((f"`jobs.{job}`", ", ".join(a.option_strings), a.help or ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    return write_or_check(TARGET, render(), "python -m scripts.config_doc", argv)


if __name__ == "__main__":
    raise SystemExit(main())
