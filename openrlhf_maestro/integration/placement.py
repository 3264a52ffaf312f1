"""Run OpenRLHF's ``train(args)`` up to the trainer actor with Ray stood in for, and report the placement.

``--runtime.check_flags`` uses this so that the checks OpenRLHF makes inside ``train()`` run for real
(cli/train_ppo_ray.py 40-140: the actor/ref and critic/reward colocation asserts, ``actor GPUs == vLLM engines x
TP`` under ``--train.colocate_all``, ``DeepspeedStrategy``'s own asserts) and so that the placement printed is
the one OpenRLHF's own code decides: its ``RayActorGroup._initiate_actors`` (launcher.py 240-290) picks each
rank's bundle and GPU share, its ``create_vllm_engines`` (vllm_engine.py 209-311) each engine's bundles. Only
what would reach a Ray cluster is replaced, inside ``dry_placement`` and nowhere else:

- ``placement_group`` returns a ``DryPlacementGroup`` (its bundles, no reservation);
- an actor class's ``.options(...).remote(...)`` records the rank and its scheduling instead of starting it;
- ``ray.get`` hands back what it is given, ``ray.is_initialized`` says True (no ``ray.init``);
- ``PPOTrainer.remote`` / ``PPOTrainerAsync.remote`` ends the run (``PlacementChecked``), after placing the
  launcher's reward model for a ``reward_model`` channel where a real run places it (``trainer.reward_model_group``).

GPU numbers: one node, each placement group takes the next free GPUs in the order ``train()`` creates them (an
actor outside any group, the next one). Ray chooses the physical devices; which roles share a GPU does not
depend on that choice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openrlhf_maestro.spec import AggregatorSpec

ROLES = {  # OpenRLHF's actor classes -> the role names the placement line uses
    "PolicyModelActor": "actor",
    "ReferenceModelActor": "ref",
    "CriticModelActor": "critic",
    "RewardModelActor": "reward",
    "RolloutRayActor": "vllm",
}


class PlacementChecked(Exception):
    """Raised where ``train()`` would start the trainer actor: every placement decision has been made."""


class _Id:
    def __init__(self, text: str) -> None:
        self.text = text

    def hex(self) -> str:
        return self.text


@dataclasses.dataclass
class DryPlacementGroup:
    """What ``ray.util.placement_group`` would reserve: ``len(bundles)`` bundles, one GPU each in OpenRLHF."""

    index: int
    bundles: list[dict]
    strategy: str
    first_gpu: int = 0

    @property
    def id(self) -> _Id:
        return _Id(f"dry-placement-group-{self.index}")

    @property
    def bundle_count(self) -> int:
        return len(self.bundles)

    def ready(self) -> DryPlacementGroup:
        return self

    def gpus(self) -> int:
        return sum(int(b.get("GPU", 0)) for b in self.bundles)


@dataclasses.dataclass
class DryActor:
    """One actor OpenRLHF would start: its role, rank, GPU share and where (placement group and bundles)."""

    role: str
    rank: int
    num_gpus: float
    pg: DryPlacementGroup | None
    bundles: tuple[int, ...]  # the bundles it (or, for a vLLM engine with TP > 1, its workers) sits on
    gpus: tuple[int, ...] = ()

    def __getattr__(self, name: str):  # any remote method: handle.method.remote(...) -> a value for ray.get
        if name.startswith("__"):
            raise AttributeError(name)
        return _DryMethod(name)


class _DryMethod:
    def __init__(self, name: str) -> None:
        self.name = name

    def remote(self, *args, **kwargs):
        return ("127.0.0.1", 0) if self.name == "get_master_addr_port" else None


class _DryActorClass:
    """Stands in for an ``@ray.remote`` class: ``.options(...).remote(...)`` records a ``DryActor``."""

    def __init__(self, role: str, record: DryPlacement, options: dict | None = None) -> None:
        self.role, self.record, self._options = role, record, options or {}

    def options(self, **options) -> _DryActorClass:
        return _DryActorClass(self.role, self.record, options)

    def remote(self, *args, **kwargs) -> DryActor:
        strategy = self._options.get("scheduling_strategy")
        pg = getattr(strategy, "placement_group", None)
        if kwargs.get("bundle_indices"):  # a vLLM engine with TP > 1: its workers take these bundles
            bundles = tuple(kwargs["bundle_indices"])
        elif pg is not None:
            bundles = (strategy.placement_group_bundle_index,)
        else:
            bundles = ()
        rank = args[1] if len(args) > 1 else sum(a.role == self.role for a in self.record.actors)
        # a vLLM engine's kwargs carry its workers' share (vllm_engine.py 278); an actor's is in its options
        num_gpus = float(kwargs.get("num_gpus", self._options.get("num_gpus")) or 0)
        if pg is not None:
            gpus = tuple(pg.first_gpu + b for b in bundles)
        else:
            gpus = self.record.take_gpus(int(num_gpus))
        actor = DryActor(self.role, rank, num_gpus, pg, bundles, gpus)
        self.record.actors.append(actor)
        return actor


@dataclasses.dataclass
class DryPlacement:
    """Everything ``train()`` asked Ray for, in order."""

    groups: list[DryPlacementGroup] = dataclasses.field(default_factory=list)
    actors: list[DryActor] = dataclasses.field(default_factory=list)
    reward_readers: list[str] = dataclasses.field(default_factory=list)  # what reads the reward model

    next_gpu: int = 0

    def placement_group(self, bundles, strategy: str = "PACK", *args, **kwargs) -> DryPlacementGroup:
        """A group reserves its GPUs when it is created: the next ``gpus()`` free ones."""
        pg = DryPlacementGroup(len(self.groups), [dict(b) for b in bundles], strategy, first_gpu=self.next_gpu)
        self.next_gpu += pg.gpus()
        self.groups.append(pg)
        return pg

    def take_gpus(self, count: int) -> tuple[int, ...]:
        """An actor outside any placement group: the next ``count`` free GPUs."""
        gpus = tuple(range(self.next_gpu, self.next_gpu + count))
        self.next_gpu += count
        return gpus

    def placement_group_table(self, pg: DryPlacementGroup) -> dict:
        return {"bundles_to_node_id": {i: "node-0" for i in range(pg.bundle_count)}}

    def roles(self) -> dict[str, set[int]]:
        """role -> the GPUs its ranks (vLLM: its engines' workers) use."""
        out: dict[str, set[int]] = {}
        for actor in self.actors:
            out.setdefault(actor.role, set()).update(actor.gpus)
        return out

    def report(self) -> list[str]:
        """Human-readable lines, then the machine-readable ``placement: role=GPUs ...`` line."""
        lines = ["placement (GPU numbers in the order Ray reserves them on one node; Ray picks the devices):"]
        for pg in self.groups:
            gpus = ranges(range(pg.first_gpu, pg.first_gpu + pg.gpus()))
            lines.append(f"  placement group {pg.index}: {pg.bundle_count} bundles ({pg.strategy}), GPUs {gpus}")
        for role, actors in itertools.groupby(self.actors, key=lambda a: a.role):
            actors = list(actors)
            where = sorted({g for a in actors for g in a.gpus})
            share = sorted({a.num_gpus for a in actors})
            if role == "vllm":
                tp = max(len(a.bundles) for a in actors) or 1
                what = f"{len(actors)} engines x TP {tp}"
            else:
                what = f"{len(actors)} ranks"
            if actors[0].pg is None:
                where_text = "GPUs of their own"
            elif all(a.bundles == _consecutive(a.rank, len(actors[0].bundles)) for a in actors):
                n = len(actors[0].bundles)
                i = "e" if role == "vllm" else "r"
                unit = f"{'engine' if role == 'vllm' else 'rank'} {i} on bundle {i}"
                if n > 1:
                    unit = f"engine e on bundles {n}e..{n}e+{n - 1}"
                where_text = f"placement group {actors[0].pg.index}, {unit}"
            else:
                bundles = "; ".join(f"{a.rank}->{ranges(a.bundles)}" for a in actors)
                where_text = f"placement group {actors[0].pg.index} bundles [{bundles}]"
            label = role
            if role == "reward" and self.reward_readers:
                label += f" ({', '.join(self.reward_readers)})"
            lines.append(
                f"  {label}: {what}, {'/'.join(f'{s:g}' for s in share)} GPU each, {where_text}: GPUs {ranges(where)}"
            )
        on_gpu: dict[int, list[str]] = {}
        for role, gpus in self.roles().items():
            for gpu in gpus:
                on_gpu.setdefault(gpu, []).append(role)
        together: dict[tuple[str, ...], list[int]] = {}
        for gpu, names in sorted(on_gpu.items()):
            together.setdefault(tuple(names), []).append(gpu)
        for names, gpus in together.items():
            lines.append(f"  GPUs {ranges(gpus)}: {' + '.join(names)}{' (colocated)' if len(names) > 1 else ''}")
        used = sorted(set().union(*self.roles().values())) if self.actors else []
        lines.append(f"  GPUs in use: {len(used)}")
        lines.append("placement: " + " ".join(f"{r}={ranges(sorted(g))}" for r, g in self.roles().items()))
        return lines


def _consecutive(rank: int, width: int) -> tuple[int, ...]:
    return tuple(range(rank * width, (rank + 1) * width))


def ranges(numbers) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the form of the scripts' ``# placement:`` comments)."""
    numbers = sorted(set(numbers))
    if not numbers:
        return "-"
    parts, start, prev = [], numbers[0], numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def parse_placement(text: str) -> dict[str, set[int]]:
    """``"actor=0-5 reward=6,7"`` -> ``{"actor": {0..5}, "reward": {6, 7}}`` (inverse of the report's last line)."""
    out: dict[str, set[int]] = {}
    for item in text.split():
        role, _, spec = item.partition("=")
        gpus: set[int] = set()
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            gpus.update(range(int(lo), int(hi or lo) + 1))
        out[role] = gpus
    return out


def _role(actor_type) -> str:
    name = getattr(actor_type, "__ray_actor_class__", actor_type).__name__
    return ROLES.get(name, name)


@contextlib.contextmanager
def dry_placement(record: DryPlacement) -> Iterator[DryPlacement]:
    """Inside this block OpenRLHF's ``train()`` places its models into ``record`` and stops at the trainer actor
    (``PlacementChecked``); nothing reaches Ray. Everything replaced is put back on exit."""
    import sys

    import openrlhf.trainer.ppo_trainer as ppo_trainer
    import openrlhf.trainer.ppo_trainer_async as ppo_trainer_async
    import openrlhf.trainer.ray.launcher as launcher
    import openrlhf.trainer.ray.vllm_engine as vllm_engine
    import openrlhf.utils as openrlhf_utils
    import ray
    import ray.util

    from openrlhf_maestro.integration import trainer as plugin_trainer

    pg_module = sys.modules["ray.util.placement_group"]
    original_group = launcher.RayActorGroup

    class DryRayActorGroup(original_group):
        """OpenRLHF's own ``RayActorGroup``: its ``_initiate_actors`` decides each rank's bundle and GPU share;
        only the actor class is stood in for."""

        def __init__(self, num_nodes, num_gpus_per_node, ray_actor_type, pg=None, *args, **kwargs) -> None:
            name = getattr(ray_actor_type, "__ray_actor_class__", ray_actor_type).__name__
            plugin_trainer.Placement.groups[name] = pg  # where the plugin's reward model looks (trainer.py)
            super().__init__(
                num_nodes, num_gpus_per_node, _DryActorClass(_role(ray_actor_type), record), pg, *args, **kwargs
            )

    class DryTrainer:
        """Where ``train()`` starts the trainer actor: place the reward model the launcher would start, stop."""

        @staticmethod
        def remote(pretrain, strategy, actor_model, critic_model, reward_model, *args, **kwargs):
            readers = plugin_trainer.reward_model_channels(plugin_trainer.LauncherSpec.current)
            if reward_model is None and readers:
                plugin_trainer.reward_model_group(strategy)
            if not getattr(strategy.args.reward, "remote_url", None):
                record.reward_readers.append("OpenRLHF's reward")
            record.reward_readers.extend(f"the {name} channel" for name in readers)
            raise PlacementChecked

    real_get_strategy = openrlhf_utils.get_strategy

    def get_strategy(args):
        strategy = real_get_strategy(args)  # DeepspeedStrategy's own asserts run
        strategy.print = lambda *a, **k: None  # train() prints the whole namespace; the check prints its own
        return strategy

    replaced = [
        (pg_module, "placement_group", record.placement_group),
        (ray.util, "placement_group", record.placement_group),
        (ray.util, "placement_group_table", record.placement_group_table),
        (launcher, "placement_group", record.placement_group),
        (vllm_engine, "placement_group", record.placement_group),
        (vllm_engine, "RolloutRayActor", _DryActorClass("vllm", record)),
        (launcher, "RayActorGroup", DryRayActorGroup),
        (ray, "get", lambda refs, *a, **k: refs),
        (ray, "is_initialized", lambda: True),
        (openrlhf_utils, "get_strategy", get_strategy),
        (ppo_trainer, "PPOTrainer", DryTrainer),
        (ppo_trainer_async, "PPOTrainerAsync", DryTrainer),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in replaced]
    saved_groups = dict(plugin_trainer.Placement.groups)
    for obj, name, value in replaced:
        setattr(obj, name, value)
    try:
        yield record
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
        plugin_trainer.Placement.groups.clear()
        plugin_trainer.Placement.groups.update(saved_groups)


def forwards_per_rank(num_items: int, ranks: int) -> list[int]:
    """How many items ``RayActorGroup.async_run_method_batch`` (launcher.py 319-372) gives each effective rank:
    chunks of c = ceil(M / E), rank i gets items [i c, min((i + 1) c, M)), so max(0, min(c, M - i c)) of them."""
    chunk = -(-num_items // ranks)
    return [max(0, min(chunk, num_items - i * chunk)) for i in range(ranks)]


def uneven_forward_problems(args, spec: AggregatorSpec | None = None) -> list[str]:
    """Model groups whose ranks would run different numbers of ZeRO-3 forwards in one experience step (a hang).

    The condition, from OpenRLHF 0.11.2's code:

    - ``RemoteExperienceMaker.make_experience`` (experience_maker.py 113-190) sends the step's M micro-batches to
      every model group through ``RayActorGroup.async_run_method_batch`` (launcher.py 319-372), and the plugin's
      model channels do the same (``model_channels.py``). A group of ``num_nodes x num_gpus_per_node`` actors
      has E = that // (ring_attn_size x ds.tensor_parallel_size) effective ranks; effective rank i runs
      ``forwards_per_rank(M, E)[i]`` = max(0, min(c, M - i c)) forwards, c = ceil(M / E). These are all equal
      iff E divides M (if not, E c > M, so some rank runs fewer than rank 0's c).
    - Under ``--ds.zero_stage 3`` each forward all-gathers every layer's parameters over the group's ranks
      (the evaluation models too: ``get_ds_eval_config`` keeps stage 3, deepspeed.py 489-501), so a rank that
      runs fewer forwards leaves the others waiting in NCCL for ever. Stages 0-2 forward without collectives.
    - M (``split_rollout_samples``, experience_maker.py 44-78): with ``--train.dynamic_batch_enable``,
      M = max(floor(m / E_actor) E_actor, E_actor) with m a first-fit count that depends on the sequence
      lengths, so any multiple of E_actor occurs, E_actor itself included: every step is even iff E divides
      E_actor. Without it, M = ceil(N / rollout.micro_batch_size), N = rollout.batch_size x
      n_samples_per_prompt (a full rollout batch): E must divide M.

    Checked for every group a step dispatches to: actor, ref (KL on), critic (gae), and the reward model when
    one is started (no reward function, or a reward-model channel beside it). Returns one message per group,
    naming both GPU counts and a fix; empty if all are even. ``spec``: the launcher's (its reward-model channels
    start a reward model); None on a patched OpenRLHF.
    """
    from openrlhf_maestro.integration.flags import flag_value, reward_model_started

    if flag_value(args, "ds.zero_stage") != 3:
        return []
    copies = flag_value(args, "ds.ring_attn_size", 1) * flag_value(args, "ds.tensor_parallel_size", 1)

    def gpus(role: str) -> int:
        return flag_value(args, f"{role}.num_nodes") * flag_value(args, f"{role}.num_gpus_per_node")

    actor_ranks = gpus("actor") // copies
    dynamic = bool(flag_value(args, "train.dynamic_batch_enable"))
    if dynamic:
        micro_batches = actor_ranks  # the smallest count a step can have; every multiple of it occurs too
        why = f"with --train.dynamic_batch_enable: a multiple of the actor's {actor_ranks} ranks"
    else:
        samples = flag_value(args, "rollout.batch_size") * flag_value(args, "rollout.n_samples_per_prompt")
        micro_batches = -(-samples // flag_value(args, "rollout.micro_batch_size"))
        why = "ceil(--rollout.batch_size x --rollout.n_samples_per_prompt / --rollout.micro_batch_size)"
    groups = [("actor", "actor")]
    if (flag_value(args, "algo.kl.init_coef") or 0) > 0:
        groups.append(("ref", "reference model"))
    if flag_value(args, "critic.model_name_or_path"):
        groups.append(("critic", "critic"))
    if reward_model_started(args, spec):
        groups.append(("reward", "reward model"))
    problems = []
    for role, name in groups:
        ranks = gpus(role) // copies
        if ranks == 0 or micro_batches % ranks == 0:
            continue
        fits = ", ".join(str(d) for d in range(1, micro_batches + 1) if micro_batches % d == 0)
        counts = ", ".join(map(str, forwards_per_rank(micro_batches, ranks)))
        other = (
            f"actor GPUs a multiple of {ranks * copies}"
            if dynamic
            else "a --rollout.micro_batch_size that makes the count a multiple of it"
        )
        problems.append(
            f"the {name} has {ranks} ZeRO-3 ranks ({gpus(role)} GPUs) beside the actor's {actor_ranks} "
            f"({gpus('actor')} GPUs): OpenRLHF splits each step's micro-batches over a group's ranks in chunks of "
            f"ceil(M / {ranks}), and M ({why}) can be {micro_batches}, which {ranks} does not divide: its ranks "
            f"would run {counts} forwards and ZeRO-3's all-gathers hang NCCL. Fix: a {name} rank count that divides "
            f"{micro_batches} ({fits}; --{role}.num_gpus_per_node x --{role}.num_nodes), or {other}"
        )
    return problems
