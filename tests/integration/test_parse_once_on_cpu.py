"""Parse once: from the command line to the Conductor, the ``AggregatorSpec`` is built once per process.

The driver builds it from the flags as OpenRLHF's parser returns and writes its JSON into the arguments; a
trainer actor rebuilds it from that JSON once, and the hook builds the aggregator from that one spec.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from _support import REPO, clean_env

from openrlhf_maestro.runtime import standin_finder

standin_finder.install()  # OpenRLHF's trainer imports flash_attn; the CPU runtime's stand-in serves it

from openrlhf_maestro.integration import flags as flags_module  # noqa: E402
from openrlhf_maestro.integration.flags import add_plugin_arguments, parse_launcher_spec  # noqa: E402
from openrlhf_maestro.method import MaestroAggregator, RewardAggregator  # noqa: E402
from openrlhf_maestro.spec import AggregatorSpec  # noqa: E402

DRIVER = textwrap.dedent(
    """
    import json, sys
    from openrlhf_maestro.method import RewardAggregator
    from openrlhf_maestro.spec import AggregatorSpec  # noqa: E402
    from openrlhf_maestro.integration import launch
    from openrlhf_maestro.cli import train_ppo_ray as launcher

    counts = {"spec": 0, "aggregator": 0}
    spec_post_init, aggregator_init = AggregatorSpec.__post_init__, RewardAggregator.__init__

    def count_spec(self):
        counts["spec"] += 1
        spec_post_init(self)

    def count_aggregator(self, *args, **kwargs):
        counts["aggregator"] += 1
        aggregator_init(self, *args, **kwargs)

    AggregatorSpec.__post_init__, RewardAggregator.__init__ = count_spec, count_aggregator
    seen = {}
    on_train = launch.on_train

    def record(run, args):
        on_train(run, args)
        seen["json"], seen["driver_spec"] = args.reward.aggregator_args, run.spec.to_json()

    launch.on_train = record
    rc = launcher.main(["--runtime.check_flags", *sys.argv[1:]])
    print("RESULT " + json.dumps({"rc": rc, **counts, **seen}))
    """
)


def test_the_driver_builds_the_spec_once_and_hands_its_json_to_train():
    """OpenRLHF's real parser, hierarchize and train() (Ray stood in for by --runtime.check_flags): one spec
    built, validated before and after OpenRLHF's adjustments, no aggregator built, and the nested arguments
    train() receives carry the spec's JSON."""
    flags = [
        *("--actor.model_name_or_path", "m", "--reward.remote_url", "r.py", "--rollout.n_samples_per_prompt", "4"),
        *("--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--reward.weights", "3,1"),
        *("--maestro.tau", "0.5", "--maestro.hidden_sizes", "8,4", "--algo.advantage.estimator", "group_norm"),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *flags], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
    assert (result["rc"], result["spec"], result["aggregator"]) == (0, 1, 0), result
    driver_spec = result["driver_spec"]
    assert json.loads(result["json"]) == driver_spec
    assert driver_spec["options"]["tau"] == 0.5 and driver_spec["options"]["hidden_sizes"] == [8, 4]
    assert driver_spec["weights"] == [3.0, 1.0]


def test_a_trainer_actor_builds_the_spec_once_from_the_json_and_the_conductor_from_it(monkeypatch):
    """The trainer mixin on top of a stand-in for OpenRLHF's trainer (its real __init__ starts model groups on
    Ray): one spec from ``args.reward.aggregator_args``, one aggregator, whose Conductor has the JSON's options."""
    from openrlhf.utils.config import hierarchize

    from openrlhf_maestro.integration import hook as hook_module
    from openrlhf_maestro.integration.trainer import AggregatingTrainerMixin

    parser = argparse.ArgumentParser()
    for flag, default in (("--rollout.n_samples_per_prompt", 4), ("--reward.remote_url", "r.py")):
        parser.add_argument(flag, default=default, type=type(default))
    parser.add_argument("--algo.advantage.estimator", default="group_norm")
    add_plugin_arguments(parser)
    ns = parser.parse_args(
        ["--reward.aggregator", "maestro", "--reward.objectives", "a,b", "--maestro.tau", "0.5"]
        + ["--maestro.hidden_sizes", "6"]
    )
    spec, problems = parse_launcher_spec(ns)  # the driver, as OpenRLHF's parser returns
    assert problems == []
    args = hierarchize(ns)
    args.actor = SimpleNamespace(model_name_or_path="m")

    counts = {"spec": 0, "aggregator": 0}
    spec_post_init, aggregator_init = AggregatorSpec.__post_init__, RewardAggregator.__init__

    def count_spec(self):
        counts["spec"] += 1
        spec_post_init(self)

    def count_aggregator(self, *a, **kw):
        counts["aggregator"] += 1
        aggregator_init(self, *a, **kw)

    monkeypatch.setattr(AggregatorSpec, "__post_init__", count_spec)
    monkeypatch.setattr(RewardAggregator, "__init__", count_aggregator)
    monkeypatch.setattr(hook_module, "hidden_size_of", lambda pretrain: 8)  # H from the model's config

    class OpenRLHFTrainer:  # the attributes BasePPOTrainer.__init__ sets and the mixin reads
        def __init__(self, pretrain, strategy, *args, **kwargs) -> None:
            self.args, self.strategy = strategy.args, strategy
            self.actor_model_group = self.critic_model_group = self.reward_model_group = None
            self.reference_model_group = self.kl_ctl = self.tokenizer = None

    class Trainer(AggregatingTrainerMixin, OpenRLHFTrainer):
        pass

    trainer = Trainer("m", SimpleNamespace(args=args))
    assert counts == {"spec": 1, "aggregator": 1}
    assert trainer.hook.spec == spec and trainer.experience_maker.hook is trainer.hook
    aggregator = trainer.hook.aggregator
    assert isinstance(aggregator, MaestroAggregator) and aggregator.conductor.tau == 0.5
    assert aggregator.conductor.hidden_size == 8 and aggregator.config.hidden_sizes == (6,)


def _parser(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollout.n_samples_per_prompt", type=int, default=4)
    parser.add_argument("--reward.remote_url", default="r.py")
    add_plugin_arguments(parser, argv)
    return parser.parse_args(argv)


def test_a_plugin_aggregator_gets_flags_of_its_own_options(tmp_path, monkeypatch):
    """--reward.plugins is read from the command line before the flags are added, so a plugin aggregator's
    ``options_class`` fields are flags too (typed by their annotations), and the spec takes them from there."""
    from openrlhf_maestro.method import aggregation

    # The registry is per process: the plugin's name is registered in a copy, so a second run of this test in
    # the same process (mutmut runs the suite in-process) registers it again from its new tmp_path.
    monkeypatch.setattr(aggregation, "_AGGREGATORS", dict(aggregation._AGGREGATORS))
    plugin = tmp_path / "scaled_plugin.py"
    plugin.write_text(
        textwrap.dedent(
            '''
            from __future__ import annotations
            from dataclasses import dataclass
            from openrlhf_maestro.method import SumAggregator, register_aggregator

            @dataclass
            class ScaledOptions:
                scale: float = 2.0
                """what every weight is multiplied by"""
                clip: float | None = None
                """largest |R|; none: no clipping"""
                skip: tuple[int, ...] = ()
                """objective indices left out"""

            @register_aggregator("scaled_i21")
            class Scaled(SumAggregator):
                options_class = ScaledOptions

                def __init__(self, objectives, weights=None, scale=2.0, clip=None, skip=()):
                    super().__init__(objectives, [scale] * len(objectives))
            '''
        )
    )
    argv = ["--reward.plugins", str(plugin), "--reward.aggregator", "scaled_i21", "--reward.objectives", "a,b"]
    ns = _parser([*argv, "--scaled_i21.scale", "3", "--scaled_i21.clip", "none", "--scaled_i21.skip", "0,1"])
    spec, problems = parse_launcher_spec(ns)
    assert problems == [] and spec.options == {"scale": 3.0, "clip": None, "skip": (0, 1)}
    assert spec.build(None).weights.tolist() == [3.0, 3.0]
    assert json.loads(getattr(ns, flags_module.SPEC_ARGS_DEST)) == spec.to_json()


def test_a_file_class_aggregator_gets_flags_under_its_own_name(tmp_path):
    """``--reward.aggregator file.py:Class`` (no --reward.plugins): a class that names itself gets
    ``--<name>.<option>`` flags; they reach the spec; the run's own flags are not called another aggregator's."""
    plugin = tmp_path / "file_class_i21.py"
    plugin.write_text(
        textwrap.dedent(
            '''
            from __future__ import annotations
            from dataclasses import dataclass
            from openrlhf_maestro.method import RewardAggregator, SumAggregator

            @dataclass
            class Options:
                scale: float = 2.0
                """what every weight is multiplied by"""

            class Scaled(SumAggregator):
                name = "scaled_file_i21"
                options_class = Options

                def __init__(self, objectives, weights=None, scale=2.0):
                    super().__init__(objectives, [scale] * len(objectives))

            class Unnamed(RewardAggregator):
                options_class = Options
            '''
        )
    )
    argv = ["--reward.aggregator", f"{plugin}:Scaled", "--reward.objectives", "a,b"]
    spec, problems = parse_launcher_spec(_parser([*argv, "--scaled_file_i21.scale", "3"]))
    assert problems == [] and spec.options == {"scale": 3.0}
    assert spec.build(None).weights.tolist() == [3.0, 3.0]
    spec, problems = parse_launcher_spec(_parser(argv))
    assert problems == [] and spec.options == {"scale": 2.0}  # the flag's default: the field's
    with pytest.raises(SystemExit):  # no name of its own: no flags to take
        _parser(["--reward.aggregator", f"{plugin}:Unnamed", "--reward.objectives", "a", "--Unnamed.scale", "3"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--reward.aggregator", "random", "--reward.objectives", "a,b", "--maestro.seed", "3"],
            "--maestro.seed set, but --reward.aggregator is random, which does not read them; its options are "
            "--random.beta, --random.normalization, --random.norm_eps, --random.seed",
        ),
        (
            ["--reward.aggregator", "sum", "--reward.objectives", "a,b", "--gdpo.eps", "0.1"],
            "--gdpo.eps set, but --reward.aggregator is sum, which does not read them; its options are none",
        ),
        (["--reward.aggregator", "gdpo", "--reward.objectives", "a,b", "--gdpo.eps", "0"], "--gdpo.*: "),
    ],
)
def test_options_come_from_the_chosen_aggregators_own_flags_only(argv, message):
    spec, problems = parse_launcher_spec(_parser(argv))
    assert any(message in p for p in problems), problems


def test_each_aggregator_reads_its_own_namespace():
    ns = _parser(["--reward.aggregator", "random", "--reward.objectives", "a,b", "--random.beta", "0.25"])
    spec, problems = parse_launcher_spec(ns)
    assert problems == [] and spec.options["beta"] == 0.25 and spec.build(None).beta == 0.25
    assert getattr(ns, "maestro.beta") == 0.5  # maestro's own flag keeps its default, unread
