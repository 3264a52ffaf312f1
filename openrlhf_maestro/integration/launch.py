"""What the launcher changes in OpenRLHF's ``train_ppo_ray`` run (an unpatched OpenRLHF), as one list.

Each entry of ``PATCHES`` names what it rebinds and why; ``installed(run)`` applies the ones that apply to this
run for the duration of OpenRLHF's CLI (the class rebinding of ``integration.install`` stays, as the CLI module
imports the classes when it runs). What the patches see and decide is kept in the ``LaunchRun``:

    parser        argparse.ArgumentParser.parse_args   OpenRLHF's parser gets the plugin's flags (also in --help);
                                                       as it returns, the driver builds the spec ONCE, validates
                                                       it and writes its JSON into reward.aggregator_args
    train_entry   openrlhf.utils.config.hierarchize,   as train(args) starts (before ray.init and any model):
                  ray.is_initialized                   the same spec re-checked against OpenRLHF's adjusted flags
    classes       openrlhf.trainer ... PPOTrainer,     the plugin's subclasses, which build the AggregatorHook
                  PPOTrainerAsync, PolicyModelActor    (only with --reward.aggregator, on an unpatched OpenRLHF)
    vllm_engines  openrlhf.trainer.ray.                the engine handles, for --runtime.verify_weight_sync
                  create_vllm_engines

OpenRLHF builds its parser inline under ``__main__`` (cli/train_ppo_ray.py 197-627) and calls ``train(args)``
on what ``hierarchize`` nests (628-630); ``train``'s first statement is ``ray.is_initialized()`` (21). All of
them are looked up at call time, so the rebinding reaches them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from openrlhf_maestro.integration.flags import (
    LauncherSpec,
    add_plugin_arguments,
    openrlhf_notes,
    openrlhf_problems,
    parse_launcher_spec,
)
from openrlhf_maestro.spec import AggregatorSpec


@dataclass
class LaunchRun:
    """One launcher run of OpenRLHF's CLI in this (driver) process: what to patch, and what the patches saw."""

    rebind_classes: bool = False
    """Rebind OpenRLHF's trainer and policy classes to the plugin's (``--reward.aggregator`` given, OpenRLHF
    unpatched)."""
    capture_engines: bool = False
    """Record the vLLM engine handles (``--runtime.verify_weight_sync``)."""
    parser: argparse.ArgumentParser | None = None
    args: argparse.Namespace | None = None
    """The flat namespace OpenRLHF's parser returned (the spec's JSON added)."""
    final: object | None = None
    """The nested arguments ``train(args)`` received, after OpenRLHF's post-parse adjustments."""
    flags_added: bool = False
    """Whether the plugin's flags were added (False: a patched OpenRLHF defines ``--reward.aggregator`` itself,
    and its hook builds and checks the spec in each actor)."""
    spec: AggregatorSpec | None = None
    """The spec, built once from the flags as the parser returned; None without ``--reward.aggregator``."""
    engines: list = field(default_factory=list)


def _is_openrlhf_parser(parser: argparse.ArgumentParser) -> bool:
    return any("--actor.model_name_or_path" in a.option_strings for a in parser._actions)


def on_parsed(run: LaunchRun, parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """The spec from the flags, once; exit 2 naming the problems before any model or actor starts."""
    run.parser, run.args = parser, ns
    if not run.flags_added:
        return
    run.spec, problems = parse_launcher_spec(ns)
    LauncherSpec.current = run.spec
    if problems:
        parser.error("\n  " + "\n  ".join(problems))


def on_train(run: LaunchRun, args: object) -> None:
    """Check the driver's spec again against the arguments as OpenRLHF leaves them after its post-parse changes
    (cli/train_ppo_ray.py 632-770: e.g. dynamic batching or ring attention switch packing on), so no later switch
    slips past; and refuse model groups whose ZeRO-3 ranks would run different numbers of forwards
    (``uneven_forward_problems``), with or without an aggregator. Runs as ``train()`` starts, before ``ray.init``
    and before any model loads; prints the spec's notes."""
    from openrlhf_maestro.integration.placement import uneven_forward_problems

    run.final = args
    spec = run.spec
    problems = (openrlhf_problems(spec, args) if spec else []) + uneven_forward_problems(args, spec)
    if problems:
        run.parser.error("after OpenRLHF's own flag adjustments:\n  " + "\n  ".join(problems))
    for note in openrlhf_notes(spec, args) if spec is not None else []:  # a patched OpenRLHF's hook notes itself
        print(f"[openrlhf-maestro] note: {note}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _parser(run: LaunchRun) -> Iterator[None]:
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        if not _is_openrlhf_parser(self):
            return original(self, args, namespace)
        run.flags_added = add_plugin_arguments(self, sys.argv[1:] if args is None else args)
        parsed = original(self, args, namespace)
        on_parsed(run, self, parsed)
        return parsed

    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


@contextlib.contextmanager
def _train_entry(run: LaunchRun) -> Iterator[None]:
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
            on_train(run, nested.pop())
        return original_is_initialized()

    config.hierarchize, ray.is_initialized = hierarchize, is_initialized
    try:
        yield
    finally:
        config.hierarchize, ray.is_initialized = original_hierarchize, original_is_initialized


@contextlib.contextmanager
def _classes(run: LaunchRun) -> Iterator[None]:
    from openrlhf_maestro.integration.install import install

    install()  # stays: the CLI module binds the classes when it runs
    yield


@contextlib.contextmanager
def _vllm_engines(run: LaunchRun) -> Iterator[None]:
    import openrlhf.trainer.ray as ray_pkg

    original = ray_pkg.create_vllm_engines

    def create_vllm_engines(*args, **kwargs):
        created = original(*args, **kwargs)
        run.engines.extend(created)
        return created

    ray_pkg.create_vllm_engines = create_vllm_engines
    try:
        yield
    finally:
        ray_pkg.create_vllm_engines = original


@dataclass(frozen=True)
class LaunchPatch:
    name: str
    target: str  # what it rebinds, for docs and errors
    why: str
    apply: Callable[[LaunchRun], contextlib.AbstractContextManager]
    applies: Callable[[LaunchRun], bool] = lambda run: True


PATCHES: tuple[LaunchPatch, ...] = (
    LaunchPatch(
        "classes",
        "openrlhf.trainer.{ppo_trainer.PPOTrainer,ppo_trainer_async.PPOTrainerAsync,ray.ppo_actor.PolicyModelActor}",
        "the plugin's subclasses build the AggregatorHook and call it where the upstream patch does",
        _classes,
        lambda run: run.rebind_classes,
    ),
    LaunchPatch(
        "parser",
        "argparse.ArgumentParser.parse_args",
        "the plugin's flags on OpenRLHF's own parser; the spec built once and validated as it returns",
        _parser,
    ),
    LaunchPatch(
        "train_entry",
        "openrlhf.utils.config.hierarchize, ray.is_initialized",
        "the spec re-checked against OpenRLHF's post-parse adjustments, before Ray starts",
        _train_entry,
    ),
    LaunchPatch(
        "vllm_engines",
        "openrlhf.trainer.ray.create_vllm_engines",
        "the engine handles, to compare their weights with the saved model after training",
        _vllm_engines,
        lambda run: run.capture_engines,
    ),
)


@contextlib.contextmanager
def installed(run: LaunchRun) -> Iterator[LaunchRun]:
    """Apply every patch of ``PATCHES`` that applies to ``run`` for the duration of the block (OpenRLHF's CLI)."""
    LauncherSpec.current = None
    with contextlib.ExitStack() as stack:
        for patch in PATCHES:
            if patch.applies(run):
                stack.enter_context(patch.apply(run))
        yield run
