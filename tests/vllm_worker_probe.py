"""Generate with vLLM's CPU build under the CPU runtime and report what its engine ran (a test's subprocess).

    python tests/vllm_worker_probe.py MODEL_DIR {mp|inproc} {native|amx|vec|vec16}

``mp`` is vLLM's default layout, the one OpenRLHF's rollout actors use: the engine core runs in a spawned worker
process, which installs the runtime's patches from the site hook (``OPENRLHF_CPU_RUNTIME=cpu`` and the site folder on
``PYTHONPATH``, set by the test). ``inproc`` runs the engine in this process, so that this script can force the
attention ISA (``cpu_attn._get_attn_isa``) before the KV cache is built; ``native`` leaves vLLM's choice alone.

Prints one line ``REPORT {json}``: the tokens sampled at temperature 1, what the worker's sampler is (the
runtime's choice, compiled or not), how many graphs dynamo compiled in the worker, the attention ISA of every
layer, and the mean |vLLM - HF float32| log-probability of a fixed text with the tolerance of
``--runtime.verify_weight_sync``.
"""

from __future__ import annotations

import json
import os
import sys

PROMPTS = 16
MAX_TOKENS = 32


def worker_report(worker) -> dict:
    """Runs in the engine's worker process."""
    import torch._dynamo.utils
    import vllm.v1.sample.ops.topk_topp_sampler as topk_topp
    import vllm.v1.sample.sampler as sampler

    from openrlhf_maestro.runtime.kernel_paths import attention_isas

    return {
        "pid": os.getpid(),
        "sampler_patched": [
            getattr(topk_topp.compiled_random_sample, "__openrlhf_cpu_patch__", False),
            getattr(sampler.batched_count_greater_than, "__openrlhf_cpu_patch__", False),
        ],
        "sampler_compiled": [
            hasattr(topk_topp.compiled_random_sample, "_torchdynamo_orig_callable"),
            hasattr(sampler.batched_count_greater_than, "_torchdynamo_orig_callable"),
        ],
        "dynamo_graphs": int(torch._dynamo.utils.counters["stats"]["unique_graphs"]),
        "attention_isa": attention_isas(worker.model_runner.model),
    }


def main() -> None:
    model_dir, mode, isa = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc with a function, as OpenRLHF sets it
    if mode == "inproc":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if isa != "native":
        import vllm.v1.attention.backends.cpu_attn as cpu_attn

        cpu_attn._get_attn_isa = lambda *args, **kwargs: isa
    import torch
    from vllm import LLM, SamplingParams

    from openrlhf_maestro.runtime import weight_sync_check as wsc

    llm = LLM(model=model_dir, dtype="bfloat16", enforce_eager=True, max_model_len=256, seed=0)
    sampled = llm.generate(
        ["hello world"] * PROMPTS, SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, logprobs=1)
    )
    token_ids = wsc.probe_token_ids(model_dir)
    scored = llm.generate(
        {"prompt_token_ids": token_ids}, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    )[0]
    got = torch.tensor([pos[t].logprob for pos, t in zip(scored.prompt_logprobs[1:], token_ids[1:], strict=True)])
    reference = wsc.hf_token_logprobs(model_dir, token_ids)
    floor = (wsc.hf_token_logprobs(model_dir, token_ids, torch.bfloat16) - reference).abs().mean().item()
    report = {
        "driver_pid": os.getpid(),
        "outputs": len(sampled),
        "tokens": [len(o.outputs[0].token_ids) for o in sampled],
        "logprobs_per_token": [len(o.outputs[0].logprobs or []) for o in sampled],
        "worker": llm.collective_rpc(worker_report)[0],
        "mean_abs_diff": (got - reference).abs().mean().item(),
        "tolerance": max(wsc.FLOOR_FACTOR * floor, wsc.MIN_TOLERANCE),
    }
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
