"""Check that every vLLM engine holds, and generates with, the weights of the saved actor
(``--runtime.verify_weight_sync``), on the CPU runtime and on GPUs.

After ``train_ppo_ray`` returns, OpenRLHF has saved the actor to ``--ckpt.output_dir`` and the last
``broadcast_to_vllm`` has run. Two checks per engine:

- **parameters**: inside each vLLM worker (every tensor-parallel rank, through ``collective_rpc``), each
  parameter is compared, exactly, with the saved Hugging Face tensor of that name, read from the safetensors
  one tensor at a time onto the parameter's device, after folding the HF names into vLLM's fused ones
  (``q/k/v_proj`` -> ``qkv_proj``, ``gate/up_proj`` -> ``gate_up_proj``), which covers Llama/Qwen2-style
  decoders. Only a summary travels back. What fits: one saved tensor (and, for a fused one, its parts) at a time
  on the device, on the CPU when the device has no room left for it (vLLM reserves most of a GPU). A parameter
  that a tensor-parallel rank holds only a shard of (its shape differs from the saved one) is counted under
  ``sharded`` and not compared; the generation check covers it;
- **generation**: vLLM's log-probabilities of a fixed token sequence (``prompt_logprobs``) equal the saved
  actor's, from a Hugging Face forward on the driver's CPU, within ``GENERATION_TOLERANCE``. Equal parameters
  are not enough: a GEMM that computes from a copy packed at load time (vLLM's oneDNN path on AVX-512) reports
  the synced parameters and generates with the old ones. The same log-probabilities from the *initial* model
  are reported too, so a run can show that the check would have caught a skipped sync.

Cost (docs/gpu.md, "Weight-sync check"): the parameter part reads the saved safetensors once per TP rank and
holds one tensor at a time beside the engine; the generation part loads the saved actor on the driver's CPU
twice (float32, then bfloat16) and the initial model once (float32), one at a time: 4 bytes per parameter of
RAM at the peak (32 GB for an 8B model), and one forward of about 46 tokens each.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _worker_cpu(worker) -> dict:
    """Runs inside the vLLM worker process: the kernels it actually ran, whatever the CPU reports."""
    from openrlhf_maestro.runtime.kernel_paths import attention_isas, process_kernels

    return {**process_kernels(), "attention_isa": attention_isas(worker.model_runner.model)}


def _engine_rpc(rollout_actor, fn) -> list:
    """Runs in a ``RolloutRayActor`` through ``__ray_call__`` (a worker thread, not the actor's event loop)."""
    handler = getattr(rollout_actor.llm, "output_handler", None)
    if handler is None:
        raise RuntimeError("the vLLM engine has not generated yet, so its event loop is unknown")
    future = asyncio.run_coroutine_threadsafe(rollout_actor.llm.collective_rpc(fn), handler.get_loop())
    return future.result(timeout=600)


def engine_cpu(engine) -> dict:
    """What TP rank 0 of one engine runs on: torch's kernel capability and the vLLM kernel library mapped."""
    import ray

    return ray.get(engine.__ray_call__.remote(_engine_rpc, _worker_cpu))[0]


def _is_padded_vocab(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.dim() == want.dim() == 2 and got.shape[1:] == want.shape[1:] and got.shape[0] > want.shape[0]


class SavedWeights:
    """The tensors of the safetensors files in ``model_dir``, read one at a time, by vLLM name: a fused name
    (``_FUSED``) is the concatenation of its HF parts along dim 0; a missing ``lm_head.weight`` is the tied
    embedding."""

    def __init__(self, model_dir: str | Path) -> None:
        from safetensors import safe_open

        self.files: dict[str, Path] = {}
        for f in sorted(Path(model_dir).glob("*.safetensors")):
            with safe_open(f, "pt") as st:
                self.files.update(dict.fromkeys(st.keys(), f))
        if not self.files:
            raise FileNotFoundError(f"no *.safetensors in {model_dir}: the saved actor is not there")

    def _read(self, name: str, device) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(self.files[name], "pt", device=str(device)) as st:
            return st.get_tensor(name)

    def get(self, name: str, device="cpu") -> torch.Tensor | None:
        if name in self.files:
            return self._read(name, device)
        for fused, parts in _FUSED.items():
            for suffix in (".weight", ".bias"):
                tail = f".{fused}{suffix}"
                if name.endswith(tail):
                    keys = [name[: -len(tail)] + f".{part}{suffix}" for part in parts]
                    if all(k in self.files for k in keys):
                        return torch.cat([self._read(k, device) for k in keys], dim=0)
        if name == "lm_head.weight" and "model.embed_tokens.weight" in self.files:  # tied embeddings
            return self._read("model.embed_tokens.weight", device)
        return None


def _saved_on(saved: SavedWeights, name: str, device) -> tuple[torch.Tensor | None, bool]:
    """The saved tensor on ``device``, or on the CPU when the device has no room for it: (tensor, on the CPU)."""
    try:
        return saved.get(name, device), torch.device(device).type == "cpu"
    except torch.OutOfMemoryError:
        return saved.get(name, "cpu"), True


def compare_parameters(named: Iterable[tuple[str, torch.Tensor]], model_dir: str | Path, tp_size: int = 1) -> dict:
    """Compare parameters (vLLM names) with the saved safetensors in ``model_dir``, one tensor at a time.

    Returns:
        {"equal": bool, "tensors": n, "compared": n compared, "sharded": names not compared (a TP shard),
         "on_cpu": n compared on the CPU for want of device memory, "max_abs_diff": float, "missing": [...],
         "mismatched": [...]}
    """
    saved = SavedWeights(model_dir)
    missing, mismatched, sharded, max_diff, tensors, on_cpu = [], [], [], 0.0, 0, 0
    for name, param in named:
        tensors += 1
        got = param.detach()
        want, cpu = _saved_on(saved, name, got.device)
        if want is None:
            missing.append(name)
            continue
        if _is_padded_vocab(got, want):  # vLLM pads the vocabulary to a multiple of 64 rows
            got = got[: want.shape[0]]
        if want.shape != got.shape:
            if tp_size > 1:
                sharded.append(name)
            else:
                mismatched.append(f"{name}: shape {tuple(got.shape)} vs saved {tuple(want.shape)}")
            continue
        if cpu and got.device.type != "cpu":
            got, on_cpu = got.cpu(), on_cpu + 1
        want = want.to(got.dtype)
        if not torch.equal(got, want):
            diff = (got.float() - want.float()).abs().max().item()
            max_diff = max(max_diff, diff)
            mismatched.append(f"{name}: max |diff| {diff:.3g}")
        del want
    return {
        "equal": not missing and not mismatched and tensors > len(sharded),
        "tensors": tensors,
        "compared": tensors - len(missing) - len(sharded),
        "sharded": sharded,
        "on_cpu": on_cpu,
        "max_abs_diff": max_diff,
        "missing": missing,
        "mismatched": mismatched,
    }


def compare(engine_state: dict[str, torch.Tensor], model_dir: str | Path) -> dict:
    """``compare_parameters`` of a state dict (one unsharded engine's parameters, by vLLM name)."""
    return compare_parameters(engine_state.items(), model_dir)


def _worker_compare(worker, model_dir: str) -> dict:
    """Runs inside a vLLM worker process: its parameters against the saved actor, on its own device."""
    try:
        from vllm.distributed import get_tensor_model_parallel_world_size

        tp_size = get_tensor_model_parallel_world_size()
    except (ImportError, AssertionError):  # no TP group initialised: one rank
        tp_size = 1
    with torch.no_grad():
        return compare_parameters(worker.model_runner.model.named_parameters(), model_dir, tp_size)


def merge_ranks(ranks: list[dict]) -> dict:
    """``compare_parameters`` of every TP rank of one engine, merged: equal only if every rank is."""
    return {
        "equal": all(r["equal"] for r in ranks),
        "tensors": sum(r["tensors"] for r in ranks),
        "compared": sum(r["compared"] for r in ranks),
        "sharded": sorted({n for r in ranks for n in r["sharded"]}),
        "on_cpu": sum(r["on_cpu"] for r in ranks),
        "max_abs_diff": max(r["max_abs_diff"] for r in ranks),
        "missing": [f"rank {i}: {n}" for i, r in enumerate(ranks) for n in r["missing"]],
        "mismatched": [f"rank {i}: {n}" for i, r in enumerate(ranks) for n in r["mismatched"]],
        "ranks": len(ranks),
    }


# Plain English the tokenizer of any chat model covers; long enough that a stale weight shows somewhere.
PROBE_TEXT = (
    "Think step by step, then give the final answer inside answer tags. What is two plus three? "
    "<think> Two and three make five. </think> <answer> five </answer> A good answer is correct and brief."
)
# The check compares the MEAN over the probe's tokens of |vLLM - HF| log p, in nats. vLLM runs the bf16
# weights in bf16 with kernels of its own (fused RMSNorm and rotary, paged attention), the reference here is a
# float32 forward of the same weights. So the yardstick for "how far may a correct bf16 engine be" is another
# correct bf16 implementation: HF in bf16, measured in every check (bf16_floor, the same mean). The tolerance
# is FLOOR_FACTOR times it, never below MIN_TOLERANCE (a floor near zero is luck, not a bound).
# Why the mean, not the max: on a 30-layer model one improbable token (log p near -11) can move by 0.5 to 3
# nats under bf16 rounding alone, so a max over 46 tokens swings from run to run; a sync that was skipped or
# not used shifts every token.
# Measured (AVX-512-BF16 CPU, --runtime cpu):
#   tiny test model after 2 GRPO steps: HF bf16 floor 0.0008, vLLM 0.0009, the initial model about 0.06 away,
#     a run whose lm_head kept computing from the stale packed copy 0.0064 (caught: tolerance 0.005);
#   SmolLM2-135M-Instruct: HF bf16 floor 0.11, vLLM 0.04 (max 0.18 to 0.58).
FLOOR_FACTOR = 4.0
MIN_TOLERANCE = 0.005


@dataclass
class GenerationCheck:
    tokens: int
    bf16_floor: float  # mean |HF bf16 - HF float32|: the rounding a correct bf16 engine shows
    tolerance: float  # max(FLOOR_FACTOR * bf16_floor, MIN_TOLERANCE)
    mean_abs_diff: float  # vLLM vs the saved actor: the compared figure
    max_abs_diff: float  # reported, not compared (one improbable token dominates it)
    initial_mean_abs_diff: float | None  # vLLM vs the model training started from, if given
    equal: bool  # mean_abs_diff <= tolerance
    discriminates: bool | None  # initial_mean_abs_diff > tolerance: a skipped sync would have failed


def probe_token_ids(model_dir: str | Path) -> list[int]:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(PROBE_TEXT, add_special_tokens=False)
    if len(ids) < 8:
        raise ValueError(f"the probe text gives only {len(ids)} tokens with the tokenizer in {model_dir}")
    return ids


def hf_token_logprobs(model_dir: str | Path, token_ids: list[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """log p(token_i | tokens_<i) for i >= 1 from a Hugging Face forward of the weights in ``model_dir``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    ids = torch.tensor([token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]


def engine_token_logprobs(engine, token_ids: list[int]) -> torch.Tensor:
    """The same log-probabilities from one ``RolloutRayActor``, through its own ``generate`` (prompt logprobs)."""
    import ray
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    out = ray.get(engine.generate.remote(token_ids, params))
    return torch.tensor([pos[tok].logprob for pos, tok in zip(out.prompt_logprobs[1:], token_ids[1:], strict=True)])


@dataclass
class Reference:
    """The Hugging Face side of the generation check, computed once for all engines (it loads 8B models)."""

    token_ids: list[int]
    logprobs: torch.Tensor  # the saved actor in float32
    bf16_floor: float  # mean |HF bf16 - HF float32| of the saved actor
    initial: torch.Tensor | None  # the initial model in float32, if given

    @classmethod
    def of(cls, model_dir: str | Path, initial_dir: str | Path | None) -> Reference:
        token_ids = probe_token_ids(model_dir)
        logprobs = hf_token_logprobs(model_dir, token_ids)
        floor = (hf_token_logprobs(model_dir, token_ids, torch.bfloat16) - logprobs).abs().mean().item()
        initial = None if initial_dir is None else hf_token_logprobs(initial_dir, token_ids)
        return cls(token_ids, logprobs, floor, initial)


def compare_generation(engine, reference: Reference) -> GenerationCheck:
    got = engine_token_logprobs(engine, reference.token_ids)
    tolerance = max(FLOOR_FACTOR * reference.bf16_floor, MIN_TOLERANCE)
    diff = (got - reference.logprobs).abs()
    initial = None
    if reference.initial is not None:
        initial = (got - reference.initial).abs().mean().item()
    return GenerationCheck(
        tokens=len(reference.token_ids) - 1,
        bf16_floor=reference.bf16_floor,
        tolerance=tolerance,
        mean_abs_diff=diff.mean().item(),
        max_abs_diff=diff.max().item(),
        initial_mean_abs_diff=initial,
        equal=diff.mean().item() <= tolerance,
        discriminates=None if initial is None else initial > tolerance,
    )


def verify(
    engines: list, model_dir: str | Path, report_path: str | Path, initial_dir: str | Path | None = None
) -> bool:
    """Check every engine against the saved actor, write a JSON report, return whether all pass both checks.
    The parameter checks of all engines run at once (each in its own workers); the Hugging Face reference is
    computed once."""
    import ray

    parameter_checks = [
        engine.__ray_call__.remote(_engine_rpc, functools.partial(_worker_compare, model_dir=str(model_dir)))
        for engine in engines
    ]
    reference = Reference.of(model_dir, initial_dir)  # on the driver's CPU while the workers compare
    reports = []
    for engine, ranks in zip(engines, ray.get(parameter_checks), strict=True):
        report = merge_ranks(ranks)
        report["parameters_equal"] = report.pop("equal")
        report["generation"] = asdict(compare_generation(engine, reference))
        report["equal"] = report["parameters_equal"] and report["generation"]["equal"]
        report["engine_cpu"] = engine_cpu(engine)
        reports.append(report)
    payload = {
        "engines": reports,
        "model_dir": str(model_dir),
        "initial_dir": str(initial_dir) if initial_dir else None,
    }
    Path(report_path).write_text(json.dumps(payload, indent=2))
    return all(r["equal"] for r in reports)
