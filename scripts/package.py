"""Build the zip that spark-submit's --py-files takes: the project's code (attribution, udfs, jobs).

    python scripts/package.py [--out dist/session_attribution.zip]

The dependencies with native code (torch, pyarrow) travel separately, as a venv-pack archive for
--archives (``make package`` builds both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_zip(out: Path) -> Path:
    """The checkout's packages (``attribution.spark.CODE_PACKAGES``) zipped at ``out``."""
    from attribution.spark import CODE_PACKAGES, code_files, write_code_zip

    return write_code_zip(out, code_files([ROOT / p for p in CODE_PACKAGES]))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "dist" / "session_attribution.zip"))
    print(build_zip(Path(p.parse_args().out)))
