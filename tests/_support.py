"""Helpers shared by the tests (importable as ``_support``; pytest.ini puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus anything that would switch the CPU runtime on by inheritance."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAESTRO_RUNTIME", "PYTHONPATH")}
    env.update(extra)
    return env
