"""Every refusal of AggregatorSpec, whole: its message and the field it names.

The field decides which flag (``spec_from_flags``) or JSON key (``from_aggregator_args``) the user is told to fix,
so a wrong field is a wrong instruction even when the message is right. The JSON reader of a patched OpenRLHF is
checked field by field: every key it reads, and the default of every key it may omit.
"""

from __future__ import annotations

import json

import pytest

from openrlhf_maestro import channels as channels_module
from openrlhf_maestro.channels import ModelChannel, register_channel
from openrlhf_maestro.spec import AggregatorSpec, SpecError

BASE = {"aggregator": "maestro", "objectives": ("a", "b")}
TARGET_NEEDS_PROMPT = (
    "the target 'judge' (meta_reward alignment) draws one emphasis per prompt from h at the prompt, so it needs "
    'context prompt, got \'response\': pass --reward.context prompt (JSON: "context": "prompt")'
)


@pytest.mark.parametrize(
    "kwargs, field, message",
    [
        (
            {"objectives": ()},
            "objectives",
            "the 'maestro' aggregator needs objectives: the keys obj/<name> your reward function puts in "
            "extra_logs, or model channels",
        ),
        ({"objectives": ("a", "a")}, "objectives", "objectives name ['a'] more than once"),
        (
            {"objectives": ("a", "a/b")},
            "objectives",
            "objective names ['a/b'] are not valid: use letters, digits, '_', '.' or '-' (no ',', '/' or spaces)",
        ),
        ({"weights": (1.0,)}, "weights", "weights must be 2 finite numbers, one per objective ['a', 'b']; got [1.0]"),
        (
            {"weights": (0.5, -1.0)},
            "weights",
            "the weights are maestro's prior: prior[1] must be a finite number >= 0, got -1.0",
        ),
        ({"options": {"tau": 0.0}}, "options", "tau must be a finite number > 0, got 0.0"),
        (
            {"objectives": ("a", "b", "c", "d", "e"), "options": {"min_prob": 0.25}},  # fine for K = 2, not 5
            "options",
            "min_prob=0.25 is out of range for K=5 objectives: the floor needs 0 <= K*min_prob < 1, i.e. "
            "0 <= min_prob < 0.2",
        ),
        (
            {"failure_policy": "ignore"},
            "failure_policy",
            "failure_policy must be one of ['stop', 'drop_response', 'skip_objective'], got 'ignore'",
        ),
        (
            {"options": {"normalization": "batch"}, "failure_policy": "skip_objective"},
            "failure_policy",
            "failure_policy skip_objective needs normalization 'group' or 'none': the running statistics of "
            "'batch' count every objective in every row",
        ),
        ({"context": "middle"}, "context", "context must be one of ['response', 'prompt'], got 'middle'"),
        (
            {"channels": {"entropy": {}}},
            "channels",
            "options given for channel 'entropy', which is not a model channel among the objectives ['a', 'b']",
        ),
        (
            {"objectives": ("entropy", "b"), "channels": {"entropy": {"x": 1}}},
            "channels",
            "channel 'entropy' has no options ['x']; it reads none",
        ),
        ({"plugins": "x.py"}, "plugins", "plugins must be a list of module names or .py paths, got 'x.py'"),
        ({"plugins": ("",)}, "plugins", "plugins must be a list of module names or .py paths, got ('',)"),
        ({"options": {"meta_reward": "alignment", "target": "judge"}}, "context", TARGET_NEEDS_PROMPT),
    ],
)
def test_each_refusal_names_its_field_and_says_it_whole(kwargs, field, message):
    with pytest.raises(SpecError) as err:
        AggregatorSpec(**{**BASE, **kwargs})
    assert (err.value.field, str(err.value)) == (field, message)


def test_an_aggregator_that_cannot_leave_out_an_objective_refuses_skip_objective(tmp_path):
    path = tmp_path / "strict_i24.py"
    path.write_text(
        "from openrlhf_maestro.method import RewardAggregator\nclass Strict(RewardAggregator):\n    pass\n"
    )
    with pytest.raises(SpecError) as err:
        AggregatorSpec(f"{path}:Strict", ("a", "b"), failure_policy="skip_objective")
    assert err.value.field == "failure_policy"
    assert str(err.value) == (
        f"the '{path}:Strict' aggregator cannot leave out a missing objective (its class does not declare "
        "handles_missing); use failure_policy stop or drop_response"
    )
    assert AggregatorSpec(f"{path}:Strict", ("a", "b"), failure_policy="drop_response").failure_policy == (
        "drop_response"
    )


def test_two_channels_that_each_need_a_reward_model_are_refused(monkeypatch):
    monkeypatch.setattr(channels_module, "_CHANNELS", dict(channels_module._CHANNELS))

    @register_channel("helpfulness_i24")
    class Helpfulness(ModelChannel):
        source = "reward_model"

    one = AggregatorSpec("sum", ("helpfulness_i24", "a"))  # one reward model: fine
    assert one.model_channels == ["helpfulness_i24"]
    with pytest.raises(SpecError) as err:
        AggregatorSpec("sum", ("preference", "helpfulness_i24", "a"))
    assert (err.value.field, str(err.value)) == (
        "objectives",
        "channels ['preference', 'helpfulness_i24'] each need a reward model; one is supported",
    )


def test_the_stored_types_are_the_specs_own():
    """Lists in, tuples and floats kept: the spec is hashable-shaped and equal to its JSON round trip."""
    spec = AggregatorSpec("maestro", ["a", "b"], weights=[1, 3], plugins=[])
    assert spec.objectives == ("a", "b") and spec.weights == (1.0, 3.0) and spec.plugins == ()


def test_json_args_carry_every_key_and_default_the_ones_left_out(tmp_path):
    plugin = tmp_path / "noop_plugin_i24.py"
    plugin.write_text("LOADED = True\n")
    spec = AggregatorSpec(
        "maestro",
        ("format", "perplexity"),
        weights=(3.0, 1.0),
        options={"tau": 0.5, "hidden_sizes": (8,)},
        context="prompt",
        channels={"perplexity": {"reasoning_end": "</r>"}},
        failure_policy="skip_objective",
        weights_log=str(tmp_path / "w.jsonl"),
        plugins=(str(plugin),),
    )
    default_template = "\n\n<answer>\n{reference}\n</answer>"
    assert spec.channels == {"perplexity": {"reasoning_end": "</r>", "reference_template": default_template}}
    assert spec.channel("perplexity").options["reasoning_end"] == "</r>"  # the spec's own options
    assert spec.channel("perplexity", {"reasoning_end": "</x>"}).options["reasoning_end"] == "</x>"  # given ones
    args = json.loads(json.dumps(spec.to_json()))
    assert AggregatorSpec.from_aggregator_args(args.pop("aggregator"), args) == spec
    least = AggregatorSpec.from_aggregator_args("sum", {"objectives": ["a"]})
    assert least == AggregatorSpec("sum", ("a",))
    assert (least.failure_policy, least.weights_log, least.plugins, least.channels) == ("stop", None, (), {})


@pytest.mark.parametrize(
    "args, message",
    [
        ("[1]", "--reward.aggregator_args: must be a JSON object, got '[1]'"),
        (
            {"objectives": []},
            '--reward.aggregator_args: needs "objectives": a non-empty list of the names your reward function '
            'reports as extra_logs["obj/<name>"], e.g. {"objectives": ["format", "length"]}; got []',
        ),
        (
            {"objectives": "a"},
            '--reward.aggregator_args: needs "objectives": a non-empty list of the names your reward function '
            'reports as extra_logs["obj/<name>"], e.g. {"objectives": ["format", "length"]}; got \'a\'',
        ),
        ({"objectives": ["a"], "options": [1]}, '--reward.aggregator_args: "options" must be a JSON object, got [1]'),
        ({"objectives": ["a"], "channels": 2}, '--reward.aggregator_args: "channels" must be a JSON object, got 2'),
        (
            {"objectives": ["a"], "weights": "1"},
            "--reward.aggregator_args: \"weights\" must be a list of numbers, got '1'",
        ),
        (
            {"objectives": ["a"], "context": "prompt"},
            "--reward.aggregator_args: \"context\" only applies to aggregators that read hidden states, not 'sum'",
        ),
        (
            {"objectives": ["a"], "aggregator": "sum"},  # the aggregator comes from --reward.aggregator
            "--reward.aggregator_args: unknown keys ['aggregator']; valid keys: ['objectives', 'weights', 'options', "
            "'context', 'channels', 'failure_policy', 'weights_log', 'plugins']",
        ),
        (
            {"objectives": ["a", "b"], "weights": [1]},
            "--reward.aggregator_args \"weights\": weights must be 2 finite numbers, one per objective ['a', 'b']; "
            "got [1]",
        ),
    ],
)
def test_json_args_errors_name_the_key_to_fix(args, message):
    with pytest.raises(SpecError) as err:
        AggregatorSpec.from_aggregator_args("sum", args)
    assert str(err.value) == message
    # a field's own check keeps its field (and the key in the message); the reader's checks name the key alone
    assert err.value.field == ("weights" if message.startswith('--reward.aggregator_args "weights"') else None)


def test_json_args_load_the_plugins_before_reading_the_aggregator_they_register(tmp_path, monkeypatch):
    from openrlhf_maestro.method import aggregation

    monkeypatch.setattr(aggregation, "_AGGREGATORS", dict(aggregation._AGGREGATORS))
    plugin = tmp_path / "hidden_plugin_i24.py"
    plugin.write_text(
        "from openrlhf_maestro.method import MaestroAggregator, register_aggregator\n"
        "@register_aggregator('hidden_i24')\n"
        "class Hidden(MaestroAggregator):\n"
        "    pass\n"
    )
    args = {"objectives": ["a", "b"], "context": "prompt", "plugins": [str(plugin)]}  # context: needs the class
    assert AggregatorSpec.from_aggregator_args("hidden_i24", args).context == "prompt"
    with pytest.raises(SpecError) as err:  # an unknown name, where the context check looks the class up
        AggregatorSpec.from_aggregator_args("median", {"objectives": ["a"], "context": "prompt"})
    assert str(err.value).startswith("--reward.aggregator_args: unknown reward aggregator 'median'; valid names: [")
