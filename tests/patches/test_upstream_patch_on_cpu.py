"""The upstream patches in patches/ applied to OpenRLHF 0.11.2's own source (the PyPI wheel), tested on CPU.

Three patches, one problem each, applied in order (the probe needs the aggregator hook; the reward model beside a
reward function needs neither), plus the CPU-portability patch:

- each applies with ``git apply`` on what it needs, the reward-model patch also on a clean tree, and the code
  they change stays small;
- after each one, the checks OpenRLHF runs pass on the tree: ``python -m compileall -q openrlhf examples tests``,
  its own test suite (the wheel's ``tests/``, every old test as on the unpatched tree, plus the tests the patches
  add), and ``bash -n`` on its shell scripts;
- the plugin's file for ``--reward.aggregator``, loaded the way the patched OpenRLHF loads it, drives the plugin's
  aggregators on real OpenRLHF ``Experience`` objects; bad ``--reward.aggregator_args`` fail naming the fix;
- e2e: two GRPO steps through the patched *plain* CLI ``python -m openrlhf.cli.train_ppo_ray --reward.aggregator
  <the plugin's file>`` on a Ray cluster with logical GPUs, with the CPU runtime's process-wide patches: maestro
  with the target-aligned meta-reward over three text rewards and three model channels (the paper's rule runs end
  to end on the launcher path, tests/e2e/test_maestro_pipeline_on_cpu.py).

The wheel is downloaded once per session with pip (or taken from ``$OPENRLHF_WHEEL``); without it the tests fail.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import torch
from _support import REPO, clean_env

from openrlhf_maestro.report import latest_run_scalars
from openrlhf_maestro.runtime import SITE_DIR
from openrlhf_maestro.runtime.cpu_patches import CPU_ENV
from openrlhf_maestro.spec import AggregatorSpec, SpecError

OPENRLHF_VERSION = "0.11.2"
WHEEL_ENV = "OPENRLHF_WHEEL"
PATCHES = REPO / "patches"
AGGREGATOR_PATCH = PATCHES / f"openrlhf-{OPENRLHF_VERSION}-reward-aggregator.patch"
PROBE_PATCH = PATCHES / f"openrlhf-{OPENRLHF_VERSION}-policy-probe.patch"
REWARD_MODEL_PATCH = PATCHES / f"openrlhf-{OPENRLHF_VERSION}-reward-model-beside-reward-function.patch"
SERIES = (AGGREGATOR_PATCH, PROBE_PATCH, REWARD_MODEL_PATCH)  # in order; each applies on the ones before it
CPU_PATCH = PATCHES / f"openrlhf-{OPENRLHF_VERSION}-cpu-portability.patch"
# What the three changed in OpenRLHF's code (tests aside) before the split: one 194-line diff.
CODE_LINES_BEFORE_SPLIT = 194
PLUGIN_FILE = REPO / "openrlhf_maestro/integration/reward_aggregator.py"  # what --reward.aggregator names
OBJECTIVES = ["format", "length", "match"]
CHANNELS = ["entropy", "perplexity", "preference"]  # policy_logits, policy_forward, reward_model


# ---- the source tree --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def openrlhf_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's purelib root (it holds ``openrlhf/`` and ``tests/``), unpacked once per session."""
    root = tmp_path_factory.mktemp("openrlhf-wheel")
    wheel = os.environ.get(WHEEL_ENV)
    if not wheel:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
            + [f"openrlhf=={OPENRLHF_VERSION}", "-d", str(root)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            # A failure, not a skip: offline, the headline check (OpenRLHF's suite on the patched tree) must not
            # read as "skipped". CI reaches the package index; elsewhere, point $OPENRLHF_WHEEL at the wheel.
            pytest.fail(f"could not download openrlhf=={OPENRLHF_VERSION} (set {WHEEL_ENV}): {proc.stderr[-600:]}")
        wheel = next(root.glob(f"openrlhf-{OPENRLHF_VERSION}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root / "unpacked")
    purelib = next(p.parent.parent for p in (root / "unpacked").rglob("openrlhf/__init__.py"))
    assert (purelib / "tests").is_dir(), f"no tests/ next to openrlhf/ in {wheel}"
    return purelib


def git_apply(tree: Path, *patches: Path, check: bool = False) -> subprocess.CompletedProcess:
    # GIT_CEILING_DIRECTORIES: never let git find an enclosing repository (it would silently skip every file).
    env = clean_env(GIT_CEILING_DIRECTORIES=str(tree.parent))
    cmd = ["git", "apply", "--whitespace=error-all", *(["--check"] if check else []), *map(str, patches)]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)


def copy_tree(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def applied(source: Path, dest: Path, *patches: Path) -> Path:
    """A copy of ``source`` with ``patches`` applied in order (each must apply)."""
    tree = copy_tree(source, dest)
    for patch in patches:
        proc = git_apply(tree, patch)
        assert proc.returncode == 0, f"{patch.name} does not apply after {[p.name for p in patches]}: {proc.stderr}"
    return tree


@pytest.fixture(scope="session")
def patched_tree(openrlhf_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenRLHF 0.11.2 with the three patches and the CPU-portability patch applied, in that order."""
    return applied(openrlhf_source, tmp_path_factory.mktemp("patched") / "src", *SERIES, CPU_PATCH)


def numstat(patch: Path, cwd: Path) -> dict[str, tuple[int, int]]:
    """path -> (added, deleted) lines; ``cwd`` outside any git work tree (git ignores paths outside the cwd)."""
    out = subprocess.run(
        ["git", "apply", "--numstat", str(patch)],
        cwd=cwd,
        env=clean_env(GIT_CEILING_DIRECTORIES=str(cwd.parent)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return {path: (int(added), int(deleted)) for added, deleted, path in rows}


def code_lines(stat: dict[str, tuple[int, int]]) -> int:
    """Changed lines (added + deleted) outside ``tests/``."""
    return sum(a + d for path, (a, d) in stat.items() if not path.startswith("tests/"))


def new_test_files(stat: dict[str, tuple[int, int]]) -> list[str]:
    return [path for path in stat if path.startswith("tests/test_")]


def test_each_patch_applies_on_what_it_needs_and_stays_small(
    openrlhf_source: Path, patched_tree: Path, tmp_path: Path
):
    stats = {patch.name: numstat(patch, openrlhf_source) for patch in SERIES}
    code = {name: code_lines(stat) for name, stat in stats.items()}
    print(f"changed lines outside tests/: {code}, {sum(code.values())} in all")
    # About half of the one diff they replace, and each brings its own test file.
    assert sum(code.values()) <= CODE_LINES_BEFORE_SPLIT // 2, code
    assert all(len(new_test_files(stat)) == 1 for stat in stats.values()), stats
    cpu = numstat(CPU_PATCH, openrlhf_source)
    touched = {path for stat in stats.values() for path in stat}
    assert set(cpu).isdisjoint(touched), "the CPU patch must touch other files than the three (independent hunks)"
    assert code_lines(cpu) < 50, cpu

    # The reward model beside a reward function needs neither of the others: it applies on a clean tree, and
    # applied first or last gives the same tree.
    first = applied(openrlhf_source, tmp_path / "rm-first", REWARD_MODEL_PATCH, CPU_PATCH, *SERIES[:2])
    for path in touched | set(cpu):
        assert (first / path).read_bytes() == (patched_tree / path).read_bytes(), path
    # Applying twice is refused (no silent double patch).
    assert all(git_apply(patched_tree, patch, check=True).returncode != 0 for patch in SERIES)


# ---- the checks OpenRLHF runs, on each patched tree -------------------------------------------------------------
def start_checks(tree: Path, xml: Path) -> subprocess.Popen:
    """OpenRLHF's own checks on ``tree`` (first on PYTHONPATH), in a subprocess: ``python -m compileall -q
    openrlhf examples tests``, ``bash -n`` on every shell script, then its ``tests/`` writing JUnit XML."""
    script = (
        f"{shlex.quote(sys.executable)} -m compileall -q openrlhf examples tests || exit 10; "
        "find . -name '*.sh' -print0 | xargs -0 -r -n1 bash -n || exit 11; "
        f"exec {shlex.quote(sys.executable)} -m pytest tests -q -p no:cacheprovider --junitxml={shlex.quote(str(xml))}"
    )
    return subprocess.Popen(
        ["bash", "-c", script],
        cwd=tree,
        env=clean_env(PYTHONPATH=str(tree)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def outcomes(xml: Path) -> dict[str, str]:
    """test id -> passed | failed | error | skipped."""
    result = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[f"{case.get('classname')}::{case.get('name')}"] = (kinds[0] if kinds else "passed").replace(
            "failure", "failed"
        )
    return result


def test_openrlhfs_checks_pass_after_each_patch(openrlhf_source: Path, tmp_path: Path):
    stages = {
        "unpatched": (),
        "reward-aggregator": SERIES[:1],
        "+policy-probe": SERIES[:2],
        "+reward-model": SERIES,
        "+cpu-portability": (*SERIES, CPU_PATCH),
        "reward-model alone": (REWARD_MODEL_PATCH,),
    }
    results, logs = {}, {}
    names = list(stages)
    for i in range(0, len(names), 2):  # two at a time: the machine's cores are shared
        runs = {}
        for name in names[i : i + 2]:
            slug = name.replace(" ", "-").replace("+", "")
            tree = applied(openrlhf_source, tmp_path / slug, *stages[name])
            runs[name] = (start_checks(tree, tmp_path / f"{slug}.xml"), tmp_path / f"{slug}.xml", time.time())
        for name, (proc, xml, t0) in runs.items():
            logs[name] = proc.communicate(timeout=900)[0]
            assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{logs[name][-3000:]}"
            results[name] = outcomes(xml)
            print(f"{name}: compileall, bash -n and {len(results[name])} tests passed in {time.time() - t0:.0f}s")

    before = results["unpatched"]
    assert before and set(before.values()) == {"passed"}, logs["unpatched"][-3000:]
    for name, patches in stages.items():
        files = {f for patch in patches for f in new_test_files(numstat(patch, openrlhf_source))}
        modules = {f[:-3].replace("/", ".") for f in files}
        new = {t: o for t, o in results[name].items() if t.split("::")[0] in modules}
        old = {t: o for t, o in results[name].items() if t not in new}
        assert old == before, (name, logs[name][-3000:])  # the same tests, all passed, nothing lost
        assert {t.split("::")[0] for t in new} == modules and set(new.values()) <= {"passed"}, (name, new)


# ---- the plugin's file behind the patched OpenRLHF -----------------------------------------------------------------
HOOK_SCRIPT = r"""
import importlib.util, json, sys
from types import SimpleNamespace as NS
import torch
from openrlhf.trainer.ppo_utils.experience import Experience

model, plugin_file, objectives = sys.argv[1], sys.argv[2], ["format", "length", "match"]
# As BasePPOTrainer loads --reward.aggregator (the reward-aggregator patch).
spec = importlib.util.spec_from_file_location("reward_aggregator", plugin_file)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
out = {"class": module.RewardAggregator.__name__}
import importlib.util  # without flash-attn, building a hook imports models/ring_attn_utils.py: the CPU patch
out["flash_attn_installed"] = importlib.util.find_spec("flash_attn") is not None

def args(aggregator_args, estimator="group_norm"):
    text = aggregator_args if isinstance(aggregator_args, str) else json.dumps(aggregator_args)
    return NS(reward=NS(aggregator=plugin_file, aggregator_args=text, remote_url="r.py"),
              rollout=NS(n_samples_per_prompt=4), algo=NS(advantage=NS(estimator=estimator)),
              actor=NS(model_name_or_path=model), ckpt=NS(disable_ds=False))

out["errors"] = []
for bad, estimator in [({"aggregator": "maestro"}, "group_norm"), ({"objectives": objectives}, "group_norm"),
                       ("[1]", "group_norm"), ("{not json", "group_norm"),
                       ({"aggregator": "maestro", "objectives": objectives}, "gae"),
                       ({"aggregator": "maestro", "objectives": objectives, "options": {"tau": -1}}, "group_norm")]:
    try:
        module.RewardAggregator(args(bad, estimator))
        out["errors"].append(None)
    except ValueError as err:
        out["errors"].append(str(err))

spec = {"aggregator": "maestro", "objectives": objectives, "weights": [2, 1, 1], "options": {"lr": 0.01},
        "context": "prompt"}
hook = module.RewardAggregator(args(spec))
out["needs_hidden"], out["position"] = hook.policy_probe.needs_hidden, hook.policy_probe.context
gen = torch.Generator().manual_seed(0)
experiences = [Experience(index=list(range(4 * i, 4 * i + 4)), rewards=torch.zeros(4),
                          info={f"obj/{n}": torch.rand(4, generator=gen) for n in objectives}) for i in range(2)]
hidden = [torch.randn(4, hook.record["hidden_size"], generator=gen) for _ in experiences]
for e, h in zip(experiences, hidden):  # where the policy-probe patch puts what the probe read in the policy forward
    e.info["hidden"] = h
logs = hook.before_advantages(experiences, None)
# R's value: the same spec's aggregator, built afresh (same seed, so the same draws), on the same rows.
matrix = torch.stack([torch.cat([e.info[f"obj/{n}"] for e in experiences]) for n in objectives], dim=1)
fresh = hook.spec.build(hook.record["hidden_size"])
reference = fresh.aggregate(matrix, torch.arange(8) // 4, torch.cat(hidden)).rewards
out["rewards_replaced"] = torch.equal(torch.cat([e.rewards for e in experiences]), reference) and all(
    torch.equal(e.rewards, e.info["reward"]) and e.rewards.dtype == torch.float32 for e in experiences)
out["hidden_left_in_info"] = any("hidden" in e.info for e in experiences)
logs.update(hook.after_advantages(experiences))
out["logs"] = sorted(logs)
out["updates"] = logs["maestro/updates"]
out["logged_in_info"] = {k: [e.info[k].tolist() for e in experiences] for k in ("maestro/updates",)}
fresh = module.RewardAggregator(args(spec))
fresh.load_state_dict(hook.state_dict())
state, restored = hook.state_dict()["state"], fresh.state_dict()["state"]
out["restored"] = all(torch.equal(a, b) for a, b in zip(state["conductor"].values(), restored["conductor"].values()))
try:
    module.RewardAggregator(args({**spec, "objectives": ["format", "length"], "weights": None})
                            ).load_state_dict(hook.state_dict())
except ValueError as err:
    out["mismatch"] = str(err)
print("RESULT " + json.dumps(out))
"""


def test_the_plugins_file_runs_behind_the_patched_loader(patched_tree: Path, tiny_model_dir: Path):
    proc = subprocess.run(
        [sys.executable, "-c", HOOK_SCRIPT, str(tiny_model_dir), str(PLUGIN_FILE)],
        cwd=REPO,
        env=clean_env(PYTHONPATH=str(patched_tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    print(f"flash_attn installed: {out['flash_attn_installed']} (if not, its import in the patched tree is optional)")
    assert out["class"] == "AggregatorHook"
    no_objectives, no_name, not_object, not_json, not_grouped, bad_tau = out["errors"]
    assert '"objectives"' in no_objectives and "extra_logs" in no_objectives
    for message in (no_name, not_object):
        assert 'needs "aggregator": one of [' in message and "'maestro'" in message
    assert "not valid JSON" in not_json
    assert "group-relative" in not_grouped and "gae" in not_grouped
    assert "tau" in bad_tau
    assert out["needs_hidden"] is True and out["position"] == "prompt"
    assert out["rewards_replaced"] and not out["hidden_left_in_info"]
    expected = {f"aggregator/weight/{n}" for n in OBJECTIVES} | {f"reward/{n}" for n in OBJECTIVES}
    assert expected | {"maestro/updates", "maestro/entropy", "reward/seconds_aggregate"} <= set(out["logs"])
    # The logs also ride in every experience's info, which OpenRLHF logs as train/<key>.
    assert out["updates"] == 1.0 and out["logged_in_info"] == {"maestro/updates": [[1.0] * 4, [1.0] * 4]}
    assert out["restored"]
    assert "cannot resume" in out["mismatch"] and "objectives" in out["mismatch"]


@pytest.mark.parametrize(
    "aggregator, options, message",
    [
        ("maestro", {}, '"objectives": a non-empty list'),
        ("sum", {"objectives": "format,length"}, '"objectives": a non-empty list'),
        ("sum", {"objectives": ["a", "a"]}, "name ['a'] more than once"),
        ("sum", {"objectives": ["a b"]}, "are not valid: use letters"),
        ("gdpo", {"objectives": ["a", "b"], "weights": [1]}, "2 finite numbers, one per objective"),
        ("gdpo", {"objectives": ["a", "b"], "weights": [1, True]}, "2 finite numbers, one per objective"),
        ("sum", {"objectives": ["a", "b"], "options": {"lr": 1.0}}, "the 'sum' aggregator has no options ['lr']"),
        ("sum", {"objectives": ["a", "b"], "context": "prompt"}, '"context" only applies to aggregators that read'),
        ("maestro", {"objectives": ["a", "b"], "context": "middle"}, "'response', 'prompt'"),
        ("maestro", {"objectives": ["a", "b"], "options": {"prior": [1, 1]}}, "the prior is the weights"),
        ("maestro", {"objectives": ["a", "b"], "options": {"tau": 0}}, "tau must be a finite number > 0"),
        ("maestro", {"objectives": ["a", "b"], "objective": ["c"]}, "unknown keys ['objective']"),
    ],
)
def test_aggregator_args_errors_name_the_fix(aggregator: str, options: dict, message: str):
    with pytest.raises(SpecError, match="--reward.aggregator_args") as err:
        AggregatorSpec.from_aggregator_args(aggregator, options)
    assert message in str(err.value)


# ---- end to end: the patched plain CLI --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the ``ray start --block`` this test started (it stops its cluster), then its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of our own group only: ray start leads it
    except ProcessLookupError:
        pass


@pytest.mark.e2e
def test_plain_openrlhf_cli_trains_with_maestro_through_the_patches(
    patched_tree: Path, tiny_model_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    out.mkdir()
    rm_dir = tmp_path / "rm"  # a reward model for the preference channel, beside the reward function
    subprocess.run(
        [sys.executable, "-m", "openrlhf_maestro.tiny_model", str(rm_dir), "--kind", "reward", "--corpus"]
        + [str(REPO / "examples/data/demo_prompts.jsonl")],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    port = free_port()
    env = clean_env(
        **CPU_ENV,
        OPENRLHF_CPU_RUNTIME="cpu",  # the CPU runtime's sitecustomize patches every Ray worker and vLLM process
        PYTHONPATH=os.pathsep.join([str(SITE_DIR), str(patched_tree)]),
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_ADDRESS", None)
    bin_dir = Path(sys.executable).parent
    ray_log = (out / "ray_start.log").open("w")
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    ray_head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={port}", "--num-gpus=3", "--num-cpus=4"]
        + ["--include-dashboard=false", f"--temp-dir={ray_tmp}"],
        env=env,
        stdout=ray_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so that the cleanup reaches only this cluster
    )
    # The three model channels, one per source, computed through the patched experience maker; the target-aligned
    # meta-reward (h at the prompt, one emphasis per group) learns from obj/judge, which only the arithmetic
    # prompts report (tests/e2e/judge_reward.py) and which is kept out of R.
    objectives = [*OBJECTIVES, *CHANNELS]
    options = {"lr": 0.01, "meta_reward": "alignment", "target": "judge"}
    aggregator_args = {"aggregator": "maestro", "objectives": objectives, "options": options, "context": "prompt"}
    # fmt: off
    flags = [
        "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
        "--vllm.num_engines", "1", "--vllm.tensor_parallel_size", "1",
        "--actor.model_name_or_path", str(tiny_model_dir), "--ds.zero_stage", "2", "--ds.param_dtype", "bf16",
        "--ds.attn_implementation", "sdpa", "--vllm.sync_backend", "gloo", "--vllm.enforce_eager",
        "--data.prompt_dataset", str(REPO / "examples/data/demo_prompts.jsonl"), "--data.input_key", "input",
        "--data.label_key", "label", "--data.apply_chat_template", "--data.max_samples", "8", "--data.max_len", "256",
        "--rollout.batch_size", "4", "--rollout.n_samples_per_prompt", "4", "--rollout.max_new_tokens", "32",
        "--rollout.micro_batch_size", "4", "--train.batch_size", "16", "--train.micro_batch_size", "4",
        "--train.max_epochs", "1", "--train.num_episodes", "1", "--train.seed", "42", "--actor.adam.lr", "1e-3",
        "--algo.advantage.estimator", "group_norm", "--algo.kl.init_coef", "0",
        "--reward.remote_url", str(REPO / "tests/e2e/judge_reward.py"),
        "--reward.model_name_or_path", str(rm_dir), "--reward.num_nodes", "1", "--reward.num_gpus_per_node", "1",
        "--reward.aggregator", str(PLUGIN_FILE), "--reward.aggregator_args", json.dumps(aggregator_args),
        "--logger.tensorboard_dir", str(out / "tensorboard"), "--ckpt.output_dir", str(out / "model"),
        "--ckpt.path", str(out / "ckpt"), "--ckpt.save_steps", "2",
    ]
    # fmt: on
    log = out / "run.log"
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in (out / "ray_start.log").read_text():
            assert ray_head.poll() is None and time.time() < deadline, (out / "ray_start.log").read_text()[-3000:]
            time.sleep(1)
        t0 = time.time()
        with log.open("w") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", "openrlhf.cli.train_ppo_ray", *flags],
                cwd=tmp_path,
                env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=480,
            )
        print(f"patched plain CLI, 2 GRPO steps with maestro (alignment meta-reward): {time.time() - t0:.0f}s")
    finally:
        stop_process_group(ray_head)
        ray_log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, log.read_text(errors="replace")[-6000:]

    scalars = latest_run_scalars(out / "tensorboard")
    vocab_size = json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    for name in objectives:
        assert sorted(scalars.get(f"train/aggregator/weight/{name}", {})) == [1, 2], sorted(scalars)
        assert sorted(scalars.get(f"train/reward/{name}", {})) == [1, 2]
        assert all(math.isfinite(v) for v in scalars[f"train/reward/{name}"].values()), name
    # One Conductor update per step with a labelled group (2+ judge values in a group), none on the others.
    fractions = scalars["train/maestro/target_fraction"]
    assert sorted(fractions) == [1, 2] and any(f > 0 for f in fractions.values()), fractions
    assert scalars["train/maestro/updates"] == {
        step: float(sum(fractions[s] > 0 for s in fractions if s <= step)) for step in (1, 2)
    }
    for step in (1, 2):
        assert sum(scalars[f"train/aggregator/weight/{n}"][step] for n in objectives) == pytest.approx(1.0, abs=1e-5)
        # entropy: mean token entropy in nats, within [0, log V]; perplexity: a group rank in [0, 1] with mean
        # 1/2 (ranks 0, 1/3, 2/3, 1 of 4 distinct values); the perplexity channel timed its extra forward.
        assert 0 < scalars["train/reward/entropy"][step] < math.log(vocab_size)
        assert scalars["train/reward/perplexity"][step] == pytest.approx(0.5, abs=1e-6)
        assert scalars["train/model_channel/perplexity/seconds"][step] > 0
    # The preference scores differ from step to step (a real model read the new responses), and they are the
    # scores the patched experience maker logged as train/reward_model: the channel read them, no second pass.
    assert len(set(scalars["train/reward/preference"].values())) == 2
    for step in (1, 2):
        assert scalars["train/reward/preference"][step] == pytest.approx(scalars["train/reward_model"][step])
    # The hook's state rode in the DeepSpeed checkpoint's client_states.
    states = torch.load(out / "ckpt/_actor/global_step2/mp_rank_00_model_states.pt", weights_only=False)
    saved = states["reward_aggregator"]
    assert saved["aggregator"] == "maestro" and saved["objectives"] == objectives and saved["hidden_size"] == 128
    assert saved["state"]["meta"] is not None
    assert saved["state"]["config"]["meta_reward"] == "alignment" and saved["state"]["config"]["target"] == "judge"


def test_the_plugins_launcher_defers_to_a_patched_openrlhfs_own_flag(patched_tree: Path, tiny_model_dir: Path):
    """On a patched OpenRLHF, --reward.aggregator is OpenRLHF's own flag (a file): the launcher must not add
    its own flag of that name again."""
    aggregator_args = json.dumps({"aggregator": "maestro", "objectives": ["format", "length"]})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openrlhf_maestro.cli.train_ppo_ray",
            "--runtime.check_flags",
            "--actor.model_name_or_path",
            str(tiny_model_dir),
            "--reward.remote_url",
            "r.py",
            "--reward.aggregator",
            str(PLUGIN_FILE),
            "--reward.aggregator_args",
            aggregator_args,
            "--rollout.n_samples_per_prompt",
            "4",
            "--algo.advantage.estimator",
            "group_norm",
        ],
        cwd=REPO,
        env=clean_env(PYTHONPATH=str(patched_tree)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"flags OK: --reward.aggregator {PLUGIN_FILE}, --reward.aggregator_args" in proc.stdout
