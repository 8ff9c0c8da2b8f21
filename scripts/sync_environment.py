"""Write environment.yml from requirements.lock so the two always agree.

Run `make lock-env` after editing requirements.lock. tests/test_environment.py
fails when they drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = """\
# conda environment for crosslab. Generated from requirements.lock by
# scripts/sync_environment.py: do not edit by hand (tests/test_environment.py checks).
# conda provides python and pip; every Python package comes pinned from the lock file.
name: crosslab
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def lock_pins(path: Path) -> list[str]:
    pins = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pins.append(line)
    return pins


def render(pins: list[str]) -> str:
    return HEADER + "".join(f"      - {p}\n" for p in pins)


def main() -> int:
    text = render(lock_pins(ROOT / "requirements.lock"))
    (ROOT / "environment.yml").write_text(text)
    print(f"environment.yml: {text.count(chr(10) + '      - ')} pinned packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
