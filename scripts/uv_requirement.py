"""Print uv's pinned requirement from uv.lock, with every hash the lock records for it.

The lock is installed by uv, so uv has to come first, and from the same lock:
``pip install --require-hashes -r <this output>`` installs exactly the uv that
uv.lock pins, checked against its hashes (scripts/bootstrap.sh, the Dockerfile).
Standard library only: it runs before anything is installed.

Usage: python scripts/uv_requirement.py [path/to/uv.lock]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_LOCK = Path(__file__).resolve().parent.parent / "uv.lock"


def uv_requirement(lock: dict[str, Any]) -> str:
    """``uv==X --hash=sha256:...`` for the one uv package of a parsed uv.lock."""
    found = [package for package in lock.get("package", []) if package.get("name") == "uv"]
    if len(found) != 1:
        raise SystemExit(
            f"uv.lock pins uv {len(found)} times, expected once: is uv in the dev extra of "
            "pyproject.toml? Run bash scripts/lock.sh."
        )
    (package,) = found
    files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
    hashes = sorted({file["hash"] for file in files if "hash" in file})
    if not hashes:
        raise SystemExit("uv.lock records no hash for uv: run bash scripts/lock.sh.")
    return " ".join([f"uv=={package['version']}", *(f"--hash={h}" for h in hashes)])


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT_LOCK
    with path.open("rb") as file:
        print(uv_requirement(tomllib.load(file)))  # noqa: T201 - the script's output


if __name__ == "__main__":
    main(sys.argv[1:])
