"""OpenRLHF's ``train_ppo_ray`` with the plugin's launcher flags in front.

    python -m openrlhf_maestro.cli.train_ppo_ray [--runtime cpu] [--runtime.* ...] <train_ppo_ray flags>

The launcher consumes only its own ``--runtime*`` flags and runs ``openrlhf.cli.train_ppo_ray`` as
``__main__`` with every other flag unchanged. Without ``--runtime cpu`` nothing is patched: the run is
OpenRLHF's own.
"""

from __future__ import annotations

import argparse
import contextlib
import runpy
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from openrlhf_maestro.integration.flags import (
    add_plugin_arguments,
    flag_value,
    launcher_flags_present,
    openrlhf_notes,
    spec_from_flags,
    upstream_hook_installed,
    validate,
)

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


def _is_openrlhf_parser(parser: argparse.ArgumentParser) -> bool:
    return any("--actor.model_name_or_path" in a.option_strings for a in parser._actions)


@contextlib.contextmanager
def openrlhf_parser_hook(
    extend: Callable[[argparse.ArgumentParser], None],
    on_parsed: Callable[[argparse.ArgumentParser, argparse.Namespace], None],
) -> Iterator[None]:
    """Extend OpenRLHF's parser before it parses, and see its result, inside this block.

    OpenRLHF builds its parser inline under ``__main__`` (cli/train_ppo_ray.py 197-627), so the plugin's
    flags are added to that very parser just before its ``parse_args`` runs: they show in ``--help``, and
    ``hierarchize`` nests them like OpenRLHF's own.
    """
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        if not _is_openrlhf_parser(self):
            return original(self, args, namespace)
        extend(self)
        parsed = original(self, args, namespace)
        on_parsed(self, parsed)
        return parsed

    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


@contextlib.contextmanager
def capture_vllm_engines(engines: list) -> Iterator[None]:
    """Record the engine handles ``create_vllm_engines`` returns (the CLI imports it at module level)."""
    import openrlhf.trainer.ray as ray_pkg

    original = ray_pkg.create_vllm_engines

    def create_vllm_engines(*args, **kwargs):
        created = original(*args, **kwargs)
        engines.extend(created)
        return created

    ray_pkg.create_vllm_engines = create_vllm_engines
    try:
        yield
    finally:
        ray_pkg.create_vllm_engines = original


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


def _on_parsed(parser: argparse.ArgumentParser, ns: argparse.Namespace, parsed: dict) -> None:
    """Validate the plugin's flags before any model or actor starts; exit 2 with the problems otherwise."""
    parsed["args"], parsed["parser"] = ns, parser
    problems = validate(ns)
    if problems:
        parser.error("\n  " + "\n  ".join(problems))


def _on_train(args: object, parsed: dict) -> None:
    """Validate again on the arguments as OpenRLHF leaves them after its post-parse changes (cli/train_ppo_ray.py
    632-770: e.g. dynamic batching or ring attention switch packing on), so no later switch slips past; and refuse
    model groups whose ZeRO-3 ranks would run different numbers of forwards (``uneven_forward_problems``), with or
    without an aggregator. Runs as ``train()`` starts, before ``ray.init`` and before any model loads."""
    from openrlhf_maestro.integration.placement import uneven_forward_problems

    parsed["final"] = args
    problems = validate(args) + uneven_forward_problems(args)  # before Ray starts or any model loads
    if problems:
        parsed["parser"].error("after OpenRLHF's own flag adjustments:\n  " + "\n  ".join(problems))
    spec = spec_from_flags(args) if launcher_flags_present(args) else None  # a patched OpenRLHF's hook notes itself
    for note in openrlhf_notes(spec, args) if spec is not None else []:
        print(f"[openrlhf-maestro] note: {note}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def openrlhf_train_entry_hook(on_train: Callable[[object], None]) -> Iterator[None]:
    """Call ``on_train(args)`` with the nested arguments OpenRLHF's ``train(args)`` receives, as it starts.

    The CLI builds them with ``hierarchize`` (cli/train_ppo_ray.py 628-630), adjusts them, then calls
    ``train``, whose first statement is ``ray.is_initialized()`` (21); both are looked up at call time.
    """
    import openrlhf.utils.config as config
    import ray

    original_hierarchize, original_is_initialized = config.hierarchize, ray.is_initialized
    nested: list[object] = []

    def hierarchize(*args, **kwargs):
        out = original_hierarchize(*args, **kwargs)
        nested.append(out)
        return out

    def is_initialized():
        if nested:
            on_train(nested.pop())
        return original_is_initialized()

    config.hierarchize, ray.is_initialized = hierarchize, is_initialized
    try:
        yield
    finally:
        config.hierarchize, ray.is_initialized = original_hierarchize, original_is_initialized


def check_flags(argv: list[str]) -> int:
    """Parse ``argv`` with OpenRLHF's parser plus the plugin's flags, let OpenRLHF adjust them, validate both
    times, then run OpenRLHF's ``train(args)`` with Ray stood in for (``integration.placement``), so that its
    own start-up asserts run and its placement decisions are printed; exit 0, or 2 naming what is refused.
    Starts no Ray, loads no model."""
    from openrlhf_maestro.integration.placement import DryPlacement, PlacementChecked, dry_placement
    from openrlhf_maestro.runtime import standin_finder

    standin_finder.install()  # OpenRLHF's CLI imports flash_attn; a real build is never shadowed
    parsed: dict = {}
    record = DryPlacement()
    try:
        with (
            openrlhf_parser_hook(add_plugin_arguments, lambda p, ns: _on_parsed(p, ns, parsed)),
            dry_placement(record),
            openrlhf_train_entry_hook(lambda args: _on_train(args, parsed)),
        ):
            run_openrlhf(argv)
    except PlacementChecked:
        ns = parsed["final"]
        keys = [
            "reward.aggregator",
            "reward.aggregator_args",
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
    elif opts.runtime == "cpu":
        from openrlhf_maestro.runtime.cpu_launch import setup

        rest = setup(rest, opts.num_gpus, opts.num_cpus, opts.cpu_isa)
    elif opts.cpu_isa != "native":
        print(f"--runtime.cpu_isa {opts.cpu_isa} is only available with --runtime cpu", file=sys.stderr)
        return 2

    if _flag_given(rest, "--reward.aggregator"):
        if upstream_hook_installed():
            print(
                "[openrlhf-maestro] this OpenRLHF carries the reward-aggregator hook (patches/): --reward.aggregator "
                "is OpenRLHF's own flag, the file `python -m openrlhf_maestro.integration.reward_aggregator` prints, "
                "configured by --reward.aggregator_args; the launcher adds nothing",
                file=sys.stderr,
                flush=True,
            )
        else:
            from openrlhf_maestro.integration.install import install

            install()

    parsed: dict[str, argparse.Namespace] = {}
    engines: list = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(openrlhf_parser_hook(add_plugin_arguments, lambda p, ns: _on_parsed(p, ns, parsed)))
        stack.enter_context(openrlhf_train_entry_hook(lambda args: _on_train(args, parsed)))
        if opts.verify_weight_sync:
            stack.enter_context(capture_vllm_engines(engines))
        run_openrlhf(rest)
    print(f"[openrlhf-maestro] train_ppo_ray finished in {time.time() - t_start:.1f}s", file=sys.stderr, flush=True)

    if opts.verify_weight_sync:
        from openrlhf_maestro.runtime.weight_sync_check import verify

        args = parsed["args"]
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
