"""The bench scripts are not a package: put bench/ on sys.path for these tests."""

from __future__ import annotations

import sys

from _support import REPO

sys.path.insert(0, str(REPO / "bench"))
