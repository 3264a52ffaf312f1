"""Serves ``flash_attn`` stand-in modules (see ``flash_attn_standin``) without importing torch eagerly.

The finder is installed by every CPU-runtime process at start-up, including processes that never
import torch, so it holds only names; the torch implementations load when ``flash_attn`` is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# stand-in module name -> names it re-exports from openrlhf_maestro.runtime.flash_attn_standin
STANDIN_MODULES: dict[str, tuple[str, ...]] = {
    "flash_attn": (),
    "flash_attn.bert_padding": ("index_first_axis", "pad_input", "rearrange", "unpad_input"),
    "flash_attn.utils": (),
    "flash_attn.utils.distributed": ("all_gather",),
}
_PACKAGES = ("flash_attn", "flash_attn.utils")


class _StandinLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module: ModuleType) -> None:
        impl = importlib.import_module("openrlhf_maestro.runtime.flash_attn_standin")
        for name in STANDIN_MODULES[module.__name__]:
            setattr(module, name, getattr(impl, name))
        module.__maestro_standin__ = True


class StandinFinder(importlib.abc.MetaPathFinder):
    """Answers for the stand-in module names only; everything else falls through."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in STANDIN_MODULES:
            return None
        is_pkg = fullname in _PACKAGES
        spec = importlib.machinery.ModuleSpec(fullname, _StandinLoader(), is_package=is_pkg)
        if is_pkg:
            spec.submodule_search_locations = []
        return spec


def install() -> bool:
    """Append the finder unless a real flash-attn is importable; True when the stand-in is active."""
    if any(isinstance(f, StandinFinder) for f in sys.meta_path):
        return True
    if importlib.machinery.PathFinder.find_spec("flash_attn") is not None:
        return False  # a real flash-attn build is installed: never shadow it
    sys.meta_path.append(StandinFinder())
    return True
