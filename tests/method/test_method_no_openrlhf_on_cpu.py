"""The method package is pure torch: it imports nothing from OpenRLHF."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import openrlhf_maestro.method as method

METHOD_DIR = Path(method.__file__).parent


def _is_openrlhf(module: str) -> bool:
    return module == "openrlhf" or module.startswith("openrlhf.")


def test_no_openrlhf_import_statement() -> None:
    files = sorted(METHOD_DIR.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            assert not any(_is_openrlhf(n) for n in names), f"{path.name}:{node.lineno} imports {names}"


def test_fresh_import_loads_no_openrlhf_module() -> None:
    code = (
        "import sys, openrlhf_maestro.method as m; "
        "print(sorted(k for k in sys.modules if k == 'openrlhf' or k.startswith('openrlhf.')))"
    )
    root = METHOD_DIR.parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
