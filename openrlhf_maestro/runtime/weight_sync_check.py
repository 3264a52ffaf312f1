"""Check that every vLLM engine holds exactly the weights of the saved actor (``--runtime.verify_weight_sync``).

After ``train_ppo_ray`` returns, OpenRLHF has saved the actor to ``--ckpt.output_dir`` and the last
``broadcast_to_vllm`` has run. This reads each engine's parameters through a vLLM ``collective_rpc``
on its worker and compares them with the saved Hugging Face weights, after folding the HF names into
vLLM's fused ones (``q/k/v_proj`` -> ``qkv_proj``, ``gate/up_proj`` -> ``gate_up_proj``), which covers
Llama/Qwen2-style decoders.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import torch

_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def _worker_parameters(worker) -> dict[str, torch.Tensor]:
    """Runs inside the vLLM worker process."""
    return {name: p.detach().to("cpu", copy=True) for name, p in worker.model_runner.model.named_parameters()}


def _engine_parameters(rollout_actor) -> list[dict[str, torch.Tensor]]:
    """Runs in a ``RolloutRayActor`` through ``__ray_call__`` (a worker thread, not the actor's event loop)."""
    handler = getattr(rollout_actor.llm, "output_handler", None)
    if handler is None:
        raise RuntimeError("the vLLM engine has not generated yet, so its event loop is unknown")
    future = asyncio.run_coroutine_threadsafe(rollout_actor.llm.collective_rpc(_worker_parameters), handler.get_loop())
    return future.result(timeout=600)


def engine_parameters(engine) -> dict[str, torch.Tensor]:
    """Parameters of TP rank 0 of one ``RolloutRayActor`` handle, by vLLM name."""
    import ray

    return ray.get(engine.__ray_call__.remote(_engine_parameters))[0]


def hf_as_vllm(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold a Hugging Face state dict into vLLM's fused parameter names (concatenating along dim 0)."""
    out = dict(hf_state)
    for fused, parts in _FUSED.items():
        for name in list(out):
            for suffix in (".weight", ".bias"):
                head = f".{parts[0]}{suffix}"
                if not name.endswith(head):
                    continue
                stem = name[: -len(head)]
                keys = [f"{stem}.{p}{suffix}" for p in parts]
                if all(k in out for k in keys):
                    out[f"{stem}.{fused}{suffix}"] = torch.cat([out.pop(k) for k in keys], dim=0)
    return out


def _is_padded_vocab(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.dim() == want.dim() == 2 and got.shape[1:] == want.shape[1:] and got.shape[0] > want.shape[0]


def compare(engine_state: dict[str, torch.Tensor], model_dir: str | Path) -> dict:
    """Compare one engine's parameters with the safetensors in ``model_dir``.

    Returns:
        {"equal": bool, "tensors": n compared, "max_abs_diff": float, "missing": [...], "mismatched": [...]}
    """
    from safetensors.torch import load_file

    hf_state: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        hf_state.update(load_file(f))
    expected = hf_as_vllm(hf_state)
    missing, mismatched, max_diff = [], [], 0.0
    for name, got in engine_state.items():
        want = expected.get(name)
        if want is None and name == "lm_head.weight":  # tied embeddings
            want = expected.get("model.embed_tokens.weight")
        if want is None:
            missing.append(name)
            continue
        if _is_padded_vocab(got, want):  # vLLM pads the vocabulary to a multiple of 64 rows
            got = got[: want.shape[0]]
        if want.shape != got.shape:
            mismatched.append(f"{name}: shape {tuple(got.shape)} vs saved {tuple(want.shape)}")
            continue
        diff = (got.float() - want.to(got.dtype).float()).abs().max().item()
        max_diff = max(max_diff, diff)
        if diff != 0.0:
            mismatched.append(f"{name}: max |diff| {diff:.3g}")
    return {
        "equal": not missing and not mismatched and bool(engine_state),
        "tensors": len(engine_state),
        "max_abs_diff": max_diff,
        "missing": missing,
        "mismatched": mismatched,
    }


def verify(engines: list, model_dir: str | Path, report_path: str | Path) -> bool:
    """Compare every engine with the saved actor, write a JSON report, return whether all are equal."""
    reports = [compare(engine_parameters(e), model_dir) for e in engines]
    Path(report_path).write_text(json.dumps({"engines": reports, "model_dir": str(model_dir)}, indent=2))
    return all(r["equal"] for r in reports)
