"""Start-up of a CPU-runtime run: environment, patches, version check, flag defaults and a Ray cluster.

OpenRLHF places every model on a Ray bundle of ``{"GPU": 1}``. A local Ray started with logical GPUs
(``ray.init(num_gpus=N)``) satisfies those bundles on a machine without one; OpenRLHF then sees an
initialized Ray and skips its own ``ray.init`` (cli/train_ppo_ray.py 21-32), so the environment it would
have passed is passed here, together with the variables that install the patches in every worker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from openrlhf_maestro.runtime import SITE_DIR, cpu_patches
from openrlhf_maestro.runtime.cpu_info import cpu_isa
from openrlhf_maestro.runtime.versions import check_versions

# Flags the CPU runtime needs; added when absent, refused when given with another value.
CPU_FLAG_DEFAULTS: dict[str, str | None] = {
    "--ds.attn_implementation": "sdpa",  # default flash_attention_2 needs CUDA
    "--vllm.sync_backend": "gloo",  # default nccl needs CUDA
    "--vllm.enforce_eager": None,  # CUDA graphs
}
CPU_FLAG_ALLOWED: dict[str, tuple[str, ...]] = {
    "--ds.attn_implementation": ("sdpa", "eager"),
    "--vllm.sync_backend": ("gloo",),
}
CPU_FLAGS_REFUSED: dict[str, str] = {
    "--ds.adam_offload": "DeepSpeedCPUAdam is a C++ JIT build; the CPU runtime already keeps Adam on the CPU",
    "--vllm.sync_with_ray": "ray.util.collective needs NCCL or a pygloo build",
}


class CpuFlagError(ValueError):
    """An OpenRLHF flag whose value cannot work on the CPU runtime."""


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The flag's value as argparse will read it: the last occurrence wins (a script's extra flags override)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def apply_cpu_flag_defaults(argv: list[str]) -> tuple[list[str], list[str]]:
    """Return (argv with the CPU defaults added, human-readable notes on what was added).

    Raises:
        CpuFlagError: a flag is given with a value the CPU runtime cannot run, or a refused flag is given.
    """
    for flag, reason in CPU_FLAGS_REFUSED.items():
        if _has_flag(argv, flag):
            raise CpuFlagError(f"{flag} is not supported with --runtime cpu: {reason}. Remove it.")
    ring = _flag_value(argv, "--ds.ring_attn_size")
    if ring is not None and ring.isdigit() and int(ring) > 1:
        raise CpuFlagError(
            f"--ds.ring_attn_size {ring} cannot run with --runtime cpu: ring attention runs ring-flash-attn's CUDA "
            "kernels (models/ring_attn_utils.py). Remove it; --ds.packing_samples alone runs on CPU."
        )
    out, notes = list(argv), []
    for flag, default in CPU_FLAG_DEFAULTS.items():
        if not _has_flag(out, flag):
            out += [flag] if default is None else [flag, default]
            notes.append(flag if default is None else f"{flag} {default}")
            continue
        allowed = CPU_FLAG_ALLOWED.get(flag)
        value = _flag_value(out, flag)
        if allowed and value not in allowed:
            raise CpuFlagError(
                f"{flag} {value} cannot run with --runtime cpu; use one of: {', '.join(allowed)} (or leave it out)."
            )
    return out, notes


def logical_gpus_needed(argv: Sequence[str]) -> int:
    """The GPU bundles OpenRLHF will ask Ray for with these flags: one per model shard it creates."""

    def count(prefix: str) -> int:
        nodes = int(_flag_value(argv, f"--{prefix}.num_nodes") or 1)
        return nodes * int(_flag_value(argv, f"--{prefix}.num_gpus_per_node") or 8)

    total = count("actor")
    if float(_flag_value(argv, "--algo.kl.init_coef") or 0.01) > 0:  # a reference model (cli 92-101)
        total += count("ref")
    if (_flag_value(argv, "--algo.advantage.estimator") or "gae") == "gae":  # a critic (cli 644-650)
        total += count("critic")
    if not _has_flag(argv, "--reward.remote_url") or _has_flag(argv, "--reward.model_name_or_path"):
        total += count("reward")  # OpenRLHF's reward model (cli 132-140), or the plugin's preference channel
    engines = int(_flag_value(argv, "--vllm.num_engines") or 0)
    return total + engines * int(_flag_value(argv, "--vllm.tensor_parallel_size") or 1)


def _check_isa(level: str) -> None:
    """Emulation only goes down: a level whose instructions this CPU lacks cannot be run."""
    if level not in cpu_patches.ISA_LEVELS:
        raise CpuFlagError(f"--runtime.cpu_isa {level}: use one of {', '.join(cpu_patches.ISA_LEVELS)}")
    need = {"avx512": "AVX-512", "avx2": "AVX2"}.get(level)
    if need and not cpu_isa().has(need):
        raise CpuFlagError(f"--runtime.cpu_isa {level}: this CPU has no {need} ({cpu_isa().summary()}); use native")


def prepare_process_environment() -> dict[str, str]:
    """Export what every CPU-runtime process needs and install the patches here; returns the env for Ray."""
    site = str(SITE_DIR)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if site not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([site, *paths])
    cpu_patches.install()  # also sets OPENRLHF_CPU_RUNTIME and the CPU_ENV defaults in os.environ
    env = {key: os.environ[key] for key in (*cpu_patches.CPU_ENV, cpu_patches.ENV_FLAG, "PYTHONPATH")}
    isa_keys = {key for level_env in cpu_patches.ISA_LIBRARY_ENV.values() for key in level_env}
    for key in (cpu_patches.ISA_ENV, *sorted(isa_keys)):  # --runtime.cpu_isa
        if key in os.environ:
            env[key] = os.environ[key]
    # What OpenRLHF's own ray.init would have passed (cli/train_ppo_ray.py 24-30).
    env.setdefault("NCCL_DEBUG", os.environ.get("NCCL_DEBUG", "WARN"))
    env.setdefault("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"))
    return env


def start_ray(num_gpus: int, num_cpus: int, env: dict[str, str]) -> None:
    """A local Ray with ``num_gpus`` logical GPUs; an already connected Ray is left as it is."""
    import ray

    if ray.is_initialized():
        return
    ray.init(
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        include_dashboard=False,
        runtime_env={"env_vars": env},
    )


def setup(argv: list[str], num_gpus: int | None, num_cpus: int | None, isa: str = "native") -> list[str]:
    """Everything before OpenRLHF's CLI runs; returns the argv to hand to it."""
    versions = check_versions()
    _check_isa(isa)
    if isa != "native":
        os.environ[cpu_patches.ISA_ENV] = isa
    argv, notes = apply_cpu_flag_defaults(argv)
    env = prepare_process_environment()
    gpus = num_gpus or logical_gpus_needed(argv)
    cpus = num_cpus or max(gpus, os.cpu_count() or 1)
    level = cpu_patches.isa_level()
    emulated = "" if level == "native" else f"; running as a CPU with {level} at most (--runtime.cpu_isa)"
    print(f"[openrlhf-maestro] CPU: {cpu_isa().summary()}{emulated}", file=sys.stderr, flush=True)
    print(
        "[openrlhf-maestro] CPU runtime: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; Ray with {gpus} logical GPUs and {cpus} logical CPUs"
        + (f"; added {', '.join(notes)}" if notes else ""),
        file=sys.stderr,
        flush=True,
    )
    start_ray(gpus, cpus, env)
    return argv
