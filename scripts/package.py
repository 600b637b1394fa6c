"""Build the zip that spark-submit's --py-files takes: the project's code (attribution, udfs, jobs).

    python scripts/package.py [--out dist/session_attribution.zip]

The dependencies with native code (torch, pyarrow) travel separately, as a venv-pack archive for
--archives (``make package`` builds both).
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("attribution", "udfs", "jobs")


def build_zip(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for package in PACKAGES:
            for path in sorted((ROOT / package).rglob("*.py")):
                z.write(path, path.relative_to(ROOT).as_posix())
    tmp.replace(out)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "dist" / "session_attribution.zip"))
    print(build_zip(Path(p.parse_args().out)))
