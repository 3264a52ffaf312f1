"""OpenRLHF's ``train_ppo_ray`` with the plugin's launcher flags in front.

    python -m openrlhf_maestro.cli.train_ppo_ray [--runtime cpu] [--runtime.* ...] <train_ppo_ray flags>

The launcher parses only its own ``--runtime*`` flags and runs ``openrlhf.cli.train_ppo_ray`` as ``__main__``
with every other flag unchanged. Inside that run, ``integration.launch`` (its ``PATCHES`` list) adds the plugin's
flags to OpenRLHF's parser, builds and validates the ``AggregatorSpec`` once, hands its JSON to the actors,
and, with ``--reward.aggregator`` on an unpatched OpenRLHF, rebinds OpenRLHF's trainer classes to the plugin's.
``--runtime cpu`` also applies the CPU runtime's patches (``runtime.cpu_patches``).
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path

from openrlhf_maestro.integration.flags import flag_value, upstream_hook_installed
from openrlhf_maestro.integration.launch import LaunchRun, installed

_MISSING = object()

OPENRLHF_CLI = "openrlhf.cli.train_ppo_ray"


def build_launcher_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m openrlhf_maestro.cli.train_ppo_ray",
        add_help=False,
        description="Launcher flags; every other flag goes to OpenRLHF's train_ppo_ray unchanged.",
    )
    parser.add_argument(
        "--runtime",
        choices=["gpu", "cpu"],
        default="gpu",
        help="gpu: OpenRLHF as published (default). cpu: apply the CPU runtime patches in every process "
        "and start a local Ray with logical GPUs, for CPU-only machines (tests, demos).",
    )
    parser.add_argument(
        "--runtime.num_gpus",
        dest="num_gpus",
        type=int,
        default=None,
        help="cpu runtime: logical GPUs for the local Ray (default: enough for the given placement flags)",
    )
    parser.add_argument(
        "--runtime.num_cpus",
        dest="num_cpus",
        type=int,
        default=None,
        help="cpu runtime: logical CPUs for the local Ray (default: max(logical GPUs, cores))",
    )
    parser.add_argument(
        "--runtime.cpu_isa",
        dest="cpu_isa",
        choices=["native", "avx512", "avx2"],
        default="native",
        help="cpu runtime: make torch and vLLM choose their kernels as on a CPU with at most this vector ISA "
        "(avx512: no BF16/AMX; avx2: no AVX-512), to test on one machine the paths that smaller CPUs take",
    )
    parser.add_argument(
        "--runtime.verify_weight_sync",
        dest="verify_weight_sync",
        action="store_true",
        help="after training, compare every vLLM engine's weights (in its workers, one tensor at a time), and its "
        "log-probabilities of a fixed text, with the saved actor's and write weight_sync_check.json into "
        "--ckpt.output_dir; exit 3 if they differ (GPU or cpu runtime; cost: docs/gpu.md)",
    )
    parser.add_argument(
        "--runtime.check_flags",
        dest="check_flags",
        action="store_true",
        help="parse and validate every flag (OpenRLHF's and the plugin's) with OpenRLHF's own parser, run OpenRLHF's "
        "start-up checks (placement asserts included), print the plugin's settings and the placement (which role "
        "gets which GPUs and bundles), and exit: starts no Ray, loads no model",
    )
    return parser


def run_openrlhf(argv: list[str]) -> None:
    """Run OpenRLHF's CLI module as ``__main__`` with ``argv``."""
    saved = sys.argv
    sys.argv = [OPENRLHF_CLI.replace(".", "/") + ".py", *argv]
    try:
        runpy.run_module(OPENRLHF_CLI, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


def _flag_given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def check_flags(argv: list[str]) -> int:
    """Parse ``argv`` with OpenRLHF's parser plus the plugin's flags, let OpenRLHF adjust them, validate both
    times, then run OpenRLHF's ``train(args)`` with Ray stood in for (``integration.placement``), so that its
    own start-up asserts run and its placement decisions are printed; exit 0, or 2 naming what is refused.
    Starts no Ray, loads no model."""
    from openrlhf_maestro.integration.placement import DryPlacement, PlacementChecked, dry_placement
    from openrlhf_maestro.runtime import standin_finder

    standin_finder.install()  # OpenRLHF's CLI imports flash_attn; a real build is never shadowed
    run = LaunchRun()
    record = DryPlacement()
    try:
        with dry_placement(record), installed(run):  # the launch patches wrap the stand-ins (ray.is_initialized)
            run_openrlhf(argv)
    except PlacementChecked:
        ns = run.final
        keys = [
            "reward.aggregator",
            *([] if run.flags_added else ["reward.aggregator_args"]),  # the patched path's own JSON flag
            "reward.objectives",
            "reward.weights",
            "algo.advantage.estimator",
            "rollout.n_samples_per_prompt",
            "ds.packing_samples",
            "actor.model_name_or_path",
        ]
        print(
            "flags OK: "
            + ", ".join(f"--{k} {flag_value(ns, k)}" for k in keys if flag_value(ns, k, _MISSING) is not _MISSING)
        )
        print("\n".join(record.report()), flush=True)
        return 0
    except AssertionError as err:  # OpenRLHF's own start-up checks are asserts (cli/train_ppo_ray.py 40-140, 690-770)
        print(f"[openrlhf-maestro] OpenRLHF refuses these flags at start-up: {err}", file=sys.stderr, flush=True)
        return 2
    raise RuntimeError("OpenRLHF's CLI finished without reaching the trainer in train(args)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    launcher = build_launcher_parser()
    opts, rest = launcher.parse_known_args(argv)
    t_start = time.time()
    if opts.check_flags:
        if opts.runtime == "cpu":  # the same flag defaults and refusals as a real CPU run, but no Ray
            from openrlhf_maestro.runtime.cpu_launch import apply_cpu_flag_defaults

            rest, _ = apply_cpu_flag_defaults(rest)
        return check_flags(rest)
    if "-h" in rest or "--help" in rest:
        launcher.print_help()
        print("\nOpenRLHF's train_ppo_ray flags follow.\n", flush=True)
        if opts.runtime == "cpu":  # OpenRLHF's CLI does not even import on CPU without the patches
            from openrlhf_maestro.runtime.cpu_patches import install

            install()
        else:  # OpenRLHF's CLI imports flash_attn at module level; --help needs no kernels (a real build wins)
            from openrlhf_maestro.runtime import standin_finder

            standin_finder.install()
    elif opts.runtime == "cpu":
        from openrlhf_maestro.runtime.cpu_launch import setup

        rest = setup(rest, opts.num_gpus, opts.num_cpus, opts.cpu_isa)
    elif opts.cpu_isa != "native":
        print(f"--runtime.cpu_isa {opts.cpu_isa} is only available with --runtime cpu", file=sys.stderr)
        return 2

    upstream = _flag_given(rest, "--reward.aggregator") and upstream_hook_installed()
    if upstream:
        print(
            "[openrlhf-maestro] this OpenRLHF carries the reward-aggregator hook (patches/): --reward.aggregator "
            "is OpenRLHF's own flag, the file `python -m openrlhf_maestro.integration.reward_aggregator` prints, "
            "configured by --reward.aggregator_args; the launcher adds nothing",
            file=sys.stderr,
            flush=True,
        )
    run = LaunchRun(
        rebind_classes=_flag_given(rest, "--reward.aggregator") and not upstream,
        capture_engines=opts.verify_weight_sync,
    )
    with installed(run):
        run_openrlhf(rest)
    print(f"[openrlhf-maestro] train_ppo_ray finished in {time.time() - t_start:.1f}s", file=sys.stderr, flush=True)

    if opts.verify_weight_sync:
        from openrlhf_maestro.runtime.weight_sync_check import verify

        args, engines = run.args, run.engines
        output_dir = Path(getattr(args, "ckpt.output_dir"))
        report = output_dir / "weight_sync_check.json"
        if getattr(args, "vllm.enable_sleep", False):  # the engines may have been put to sleep after the last step
            import ray

            ray.get([engine.wake_up.remote() for engine in engines])
        ok = verify(engines, output_dir, report, initial_dir=getattr(args, "actor.model_name_or_path"))
        print(
            f"[openrlhf-maestro] vLLM's weights and log-probabilities {'match' if ok else 'DIFFER FROM'} "
            f"the saved actor's: {report}",
            file=sys.stderr,
            flush=True,
        )
        if not ok:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
