"""Post-import hooks: run a function on a module right after it is first imported.

The CPU runtime patches OpenRLHF, DeepSpeed and vLLM from outside site-packages. Patching at import
time (rather than importing everything eagerly) keeps processes that never touch a target, such as
Ray's own helper processes, fast and unpatched, and guarantees the patch lands before any
``from module import name`` elsewhere copies the unpatched attribute.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType

Hook = Callable[[ModuleType], None]

_hooks: dict[str, list[Hook]] = {}
_lock = threading.RLock()
_finder: _PostImportFinder | None = None


class _HookedLoader(importlib.abc.Loader):
    """Wraps a module's real loader and runs the registered hooks after ``exec_module``."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Restore the real loader so that reloads and introspection see the original.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _run_hooks(self._name, module)

    def __getattr__(self, item: str):  # get_source, is_package, ... for tools that ask
        return getattr(self._loader, item)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder that defers to the rest of ``sys.meta_path`` and wraps hooked modules."""

    def __init__(self) -> None:
        self._in_progress: set[str] = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in _hooks or fullname in self._in_progress:
            return None
        self._in_progress.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._in_progress.discard(fullname)
        if spec.loader is None:
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


def _run_hooks(name: str, module: ModuleType) -> None:
    with _lock:
        hooks = list(_hooks.get(name, ()))
    for hook in hooks:
        hook(module)


def when_imported(name: str, hook: Hook) -> None:
    """Run ``hook(module)`` once ``name`` is imported; at once if it already is.

    Registering the same function twice for the same module is a no-op, so installers may run
    in every process and more than once.
    """
    global _finder
    with _lock:
        hooks = _hooks.setdefault(name, [])
        if hook in hooks:
            return
        hooks.append(hook)
        if _finder is None:
            _finder = _PostImportFinder()
            sys.meta_path.insert(0, _finder)
    module = sys.modules.get(name)
    if module is not None:
        hook(module)


def registered() -> dict[str, int]:
    """Module name -> number of hooks registered (for tests and diagnostics)."""
    with _lock:
        return {name: len(hooks) for name, hooks in _hooks.items()}
