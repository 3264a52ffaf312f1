"""Every change that lets the unmodified OpenRLHF 0.11.2 GRPO pipeline run on a CPU-only machine.

Each entry of ``PATCHES`` names the module it waits for, the attribute it rebinds and why. ``install()``
registers them as post-import hooks, so a patch lands in whichever process imports its target: the
driver, the Ray actors (PPOTrainer, policy, reference) and vLLM's engine-core subprocess all run
``install()`` from the ``sitecustomize`` that the launcher puts on ``PYTHONPATH``.

Nothing here runs unless the launcher is given ``--runtime cpu``; on a GPU machine OpenRLHF runs as
published. Line numbers refer to the OpenRLHF 0.11.2 wheel.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from openrlhf_maestro.runtime import standin_finder
from openrlhf_maestro.runtime.cpu_info import cpu_isa
from openrlhf_maestro.runtime.import_hooks import when_imported
from openrlhf_maestro.runtime.versions import require_attr

ENV_FLAG = "OPENRLHF_CPU_RUNTIME"


@dataclass(frozen=True)
class Patch:
    module: str  # the patch runs right after this module is imported
    target: str  # dotted name of what it rebinds, for error messages and docs
    why: str
    apply: Callable[[ModuleType], None]


def _mark(fn: Callable) -> Callable:
    fn.__openrlhf_cpu_patch__ = True
    return fn


def _is_patched(fn: object) -> bool:
    return getattr(fn, "__openrlhf_cpu_patch__", False)


def _rebind(owner: object, attr: str, target: str, make: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.attr`` by ``make(original)`` once; raise if the attribute is gone."""
    original = require_attr(owner, attr, target)
    if _is_patched(original):
        return
    setattr(owner, attr, _mark(make(original)))


# --- torch.cuda ---------------------------------------------------------------------------------------


def _patch_torch_cuda(torch: ModuleType) -> None:
    """~25 unconditional ``torch.cuda.*`` calls (deepspeed.py 97, ppo_actor.py 171/417/627, launcher.py 64/136,
    replay_buffer.py 104, ...) raise on CPU torch. Device queries answer "cpu"; sync calls become no-ops."""
    cuda = torch.cuda
    _rebind(cuda, "set_device", "torch.cuda.set_device", lambda _: lambda device: None)
    _rebind(cuda, "synchronize", "torch.cuda.synchronize", lambda _: lambda device=None: None)
    _rebind(cuda, "empty_cache", "torch.cuda.empty_cache", lambda _: lambda: None)
    _rebind(cuda, "current_stream", "torch.cuda.current_stream", lambda _: lambda device=None: None)
    _rebind(cuda, "current_device", "torch.cuda.current_device", lambda _: lambda: "cpu")


# --- the CPU's vector ISA, as vLLM and torch see it -------------------------------------------------------

ISA_ENV = "OPENRLHF_CPU_ISA"
# Level -> the torch.cpu probes that answer False at that level. vLLM asks exactly these to choose its kernel
# library (platforms/cpu.py 561-580), its attention ISA (cpu_attn.py 494-500) and its GEMM (layers/utils.py).
ISA_LEVELS: dict[str, tuple[str, ...]] = {
    "native": (),
    "avx512": ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported"),
    "avx2": (
        "_is_avx512_supported",
        "_is_avx512_bf16_supported",
        "_is_vnni_supported",
        "_is_amx_tile_supported",
        "_is_amx_fp16_supported",
    ),
}
# The libraries that pick kernels by ISA themselves, outside those probes. Each reads its variable once, when it
# loads (so the variables travel in the environment to every process):
# - torch's own dispatch (``ATEN_CPU_CAPABILITY``): the vectorized ATen kernels;
# - oneDNN (``ONEDNN_MAX_CPU_ISA``): its primitives (matmul, inner product) and the brgemm micro-kernels that
#   torch's bf16 SDPA packs for. torch asks oneDNN, not the CPU, whether to pack (``cpublas::need_pack``:
#   ``dnnl::get_effective_cpu_isa() >= avx512_core_amx``), so without this an AMX CPU emulating AVX2 takes the
#   packed path inside torch's AVX2 kernels and fails ("pack_vnni2 is only supported when avx512 is supported").
# Level -> {variable: value}.
ISA_LIBRARY_ENV: dict[str, dict[str, str]] = {
    "native": {},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def isa_level(env: dict[str, str] | None = None) -> str:
    level = (os.environ if env is None else env).get(ISA_ENV, "native")
    if level not in ISA_LEVELS:
        raise ValueError(f"{ISA_ENV}={level!r}: use one of {', '.join(ISA_LEVELS)}")
    return level


def _patch_cpu_isa(torch: ModuleType) -> None:
    """``OPENRLHF_CPU_ISA=avx2|avx512`` (``--runtime.cpu_isa``): run as a CPU of that level would, so one machine
    can test the kernel paths of the machines below it. Only downwards: a probe that is False stays False."""
    cpu = require_attr(torch, "cpu", "torch.cpu")
    for probe in ISA_LEVELS["avx2"]:  # every probe, so a renamed one fails on every machine, not just some
        require_attr(cpu, probe, f"torch.cpu.{probe}")
    for probe in ISA_LEVELS[isa_level()]:
        _rebind(cpu, probe, f"torch.cpu.{probe}", lambda _: lambda: False)


# --- OpenRLHF --------------------------------------------------------------------------------------------


def _patch_replay_buffer(mod: ModuleType) -> None:
    """replay_buffer.py 40 builds ``torch.device(f"cuda:{current_device()}")``: keep experiences on the CPU."""
    import torch

    cls = require_attr(mod, "NaiveReplayBuffer", "openrlhf.trainer.ppo_utils.replay_buffer.NaiveReplayBuffer")

    def make(original_init):
        @functools.wraps(original_init)
        def __init__(self, *args, **kwargs):
            # current_device() answers "cpu" under this runtime, which would make "cuda:cpu".
            with _current_device_returns(0):
                original_init(self, *args, **kwargs)
            self.target_device = torch.device("cpu")

        return __init__

    _rebind(cls, "__init__", "openrlhf.trainer.ppo_utils.replay_buffer.NaiveReplayBuffer.__init__", make)


@contextlib.contextmanager
def _current_device_returns(value):
    import torch

    saved = torch.cuda.current_device
    torch.cuda.current_device = lambda: value
    try:
        yield
    finally:
        torch.cuda.current_device = saved


def _patch_device_mesh(mod: ModuleType) -> None:
    """deepspeed.py 105-107 calls ``init_device_mesh("cuda", ...)``: build the mesh on the CPU."""

    def make(original):
        @functools.wraps(original)
        def init_device_mesh(device_type, *args, **kwargs):
            return original("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

        return init_device_mesh

    _rebind(mod, "init_device_mesh", "openrlhf.utils.deepspeed.deepspeed.init_device_mesh", make)


def _patch_torch_adam(mod: ModuleType) -> None:
    """DeepSpeed picks FusedAdam, a C++ JIT build on its CPU accelerator (minutes on 2 cores).
    ``"torch_adam": true`` in the optimizer params selects ``torch.optim.AdamW`` (engine.py 2172-2175)."""
    cls = require_attr(mod, "DeepspeedStrategy", "openrlhf.utils.deepspeed.deepspeed.DeepspeedStrategy")

    def make(original):
        @functools.wraps(original)
        def get_ds_train_config(self, *args, **kwargs):
            config = original(self, *args, **kwargs)
            optimizer = config.get("optimizer")
            if optimizer and optimizer.get("type") in ("Adam", "AdamW"):
                optimizer.setdefault("params", {})["torch_adam"] = True
            return config

        return get_ds_train_config

    _rebind(
        cls, "get_ds_train_config", "openrlhf.utils.deepspeed.deepspeed.DeepspeedStrategy.get_ds_train_config", make
    )


def _patch_weight_sync_group(mod: ModuleType) -> None:
    """distributed_util.py 21-26 builds a PyNccl communicator for the DeepSpeed -> vLLM broadcast."""
    from openrlhf_maestro.runtime.gloo_sync import stateless_init_process_group

    _rebind(
        mod,
        "stateless_init_process_group",
        "openrlhf.utils.distributed_util.stateless_init_process_group",
        lambda _: stateless_init_process_group,
    )


def _patch_vllm_worker_receive(mod: ModuleType) -> None:
    """vllm_worker_wrap.py 40 allocates the received weight with ``device="cuda"``: receive on the CPU."""
    cls = require_attr(mod, "WorkerWrap", "openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap")

    def make(original):
        @functools.wraps(original)
        def update_weight(self, name, dtype, shape, empty_cache=False):
            import torch

            if self._model_update_with_ray:  # --vllm.sync_with_ray goes through ray.util.collective: unchanged
                return original(self, name, dtype, shape, empty_cache)
            if dtype != self.model_config.dtype:
                raise TypeError(f"weight {name}: sender dtype {dtype} != vLLM model dtype {self.model_config.dtype}")
            weight = torch.empty(shape, dtype=dtype, device="cpu")
            self._model_update_group.broadcast(weight, src=0)
            self.model_runner.model.load_weights(weights=[(name, weight)])

        return update_weight

    _rebind(cls, "update_weight", "openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap.update_weight", make)


# --- vLLM ------------------------------------------------------------------------------------------------

VLLM_GEMM_TARGET = "vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm"


def _plain_linear_dispatch(original: Callable) -> Callable:
    """The dispatch the RL runtime uses instead of vLLM's: every dense 2-D weight stays a live ``Parameter``.

    vLLM 0.29.0's CPU build (``layers/utils.py`` 434-545) picks a GEMM per layer when the model loads: zentorch
    on AMD Zen (with the ``zentorch`` package), the sgl AMX kernels for small weights, a prepacked oneDNN handle
    wherever ``ops._supports_onednn`` holds (AVX-512 builds), else ``torch.nn.functional.linear``. Every path
    but the last computes from a copy packed at load time. Linear layers then replace their ``weight`` by an
    empty ``Parameter`` (``remove_weight=True``), so OpenRLHF's weight sync crashes in ``load_weights``;
    embeddings and ``lm_head`` keep theirs but keep computing from the stale packed copy, so a sync "succeeds"
    and generation silently uses the old weights.

    Chosen: keep vLLM off the prepacked paths, for every ISA. The alternative, re-running the dispatch after
    each sync, would need the weights kept anyway (``remove_weight`` deletes them), a second full copy per
    layer, and one more vLLM internal to follow (which layers were dispatched, in what order). The plain path
    reads ``layer.weight`` on every call, so whatever ``load_weights`` writes is what the next token uses, and
    torch's own ``linear`` still uses oneDNN/MKL underneath. Costs generation speed on AVX-512/AMX machines;
    the GPU path never comes here. Non-2-D weights (MoE experts, causal-conv1d) and quantized layers keep
    vLLM's dispatch: the CPU runtime serves dense test and demo models.
    """
    import torch

    @functools.wraps(original)
    def dispatch_cpu_unquantized_gemm(layer, remove_weight: bool) -> None:
        if layer.weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = torch.nn.functional.linear
        return None

    return dispatch_cpu_unquantized_gemm


def _patch_vllm_cpu_gemm(mod: ModuleType) -> None:
    """vLLM looks the dispatch up in this module at call time (linear.py 213, vocab_parallel_embedding.py 64)."""
    _rebind(mod, "dispatch_cpu_unquantized_gemm", VLLM_GEMM_TARGET, _plain_linear_dispatch)


VLLM_SAMPLER_TARGETS = (
    "vllm.v1.sample.ops.topk_topp_sampler.compiled_random_sample",
    "vllm.v1.sample.sampler.batched_count_greater_than",
)


def _uncompiled(original: Callable) -> Callable:
    """The Python function under a ``torch.compile`` wrapper, run eagerly.

    vLLM 0.29.0's CPU sampler runs two functions through inductor (``dynamic=True``; the second is marked
    unbacked): ``compiled_random_sample`` (``topk_topp_sampler.py`` 341-346, every temperature > 0 request without
    its own seed, through ``forward_cpu``) and ``batched_count_greater_than`` (``ops/logprobs.py`` 10-27, the rank
    of every requested log-probability). On an Intel Xeon with AMX (``amx_tile amx_bf16``, 2 cores, torch
    2.13.0+cpu), the C++ kernel inductor generates for the first corrupts the heap of vLLM's engine process when
    the vocabulary is small: glibc aborts with ``double free or corruption (!prev)`` or ``free(): invalid next
    size``, and the engine reports ``EngineDeadError`` at the first generation.

    Reproducer (plain vLLM, no OpenRLHF, no plugin): ``shared/repro/vllm_cpu_bf16_worker.py MODEL_DIR`` with
    ``python -m openrlhf_maestro.tiny_model MODEL_DIR``. Narrowed there: vocabulary 4,096 crashes, 16,384 and
    49,152 work; temperature 0 works; ``TORCHDYNAMO_DISABLE=1`` works; in-process generation and float32 work.
    Ruled out: the preloaded libgomp, vLLM's AMX attention, thread binding, the runtime's GEMM patch, the
    architecture (Qwen2 or Llama) and the width (128 to 576). Inductor prefers its AMX vector ISA on such CPUs
    (``torch/_inductor/cpu_vec_isa.py``), which no other machine here runs.

    Chosen: on CPUs with AMX tiles, both functions run uncompiled. The bodies are vLLM's own
    (``_torchdynamo_orig_callable`` is the decorated function): a softmax, an exponential draw, a division and an
    argmax over one (batch, vocab) tensor, or a comparison and a sum. The CPU is read from ``/proc/cpuinfo``, not
    from torch's probes, so an AMX CPU emulating a smaller one (``--runtime.cpu_isa``) stays off the kernel too.
    Elsewhere vLLM's compiled functions stay: eager was 2 to 3 times slower per call on an AVX-512 CPU
    (``bench/bench_vllm_sampler.py``, docs/results.md), and the compiled kernel works there. The target is checked
    on every CPU, so a vLLM that stops compiling it fails loudly everywhere. Disabling dynamo in every vLLM
    process would also work, but it reaches further than the kernel at fault. The GPU path never comes here.
    """
    eager = getattr(original, "_torchdynamo_orig_callable", None)
    if eager is None:
        raise RuntimeError(
            f"{original!r} is no longer a torch.compile wrapper: vLLM changed its CPU sampler. Check whether the "
            "runtime still needs to run it uncompiled (cpu_patches._uncompiled), then update or drop the patch."
        )
    return eager


def _sampler_for_this_cpu(original: Callable) -> Callable:
    """Uncompiled on CPUs with AMX tiles, vLLM's compiled function elsewhere (see ``_uncompiled``)."""
    eager = _uncompiled(original)  # the target's check runs on every CPU
    return eager if cpu_isa().has("AMX") else original


def _patch_vllm_random_sample(mod: ModuleType) -> None:
    """``forward_cpu`` looks ``compiled_random_sample`` up in its module at call time."""
    _rebind(mod, "compiled_random_sample", VLLM_SAMPLER_TARGETS[0], _sampler_for_this_cpu)


def _patch_vllm_logprob_ranks(mod: ModuleType) -> None:
    """``Sampler`` calls the name it imported into ``vllm.v1.sample.sampler`` (sampler.py 14, 220, 349)."""
    _rebind(mod, "batched_count_greater_than", VLLM_SAMPLER_TARGETS[1], _sampler_for_this_cpu)


# --- DeepSpeed -------------------------------------------------------------------------------------------


SDPA = "sdpa"


def _sdpa_for_flash(original: Callable) -> Callable:
    """``original`` with its ``attn_implementation`` argument mapped from flash_attention_* to sdpa."""
    import inspect

    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if "flash_attention" in str(bound.arguments.get("attn_implementation")):
            bound.arguments["attn_implementation"] = SDPA
        return original(*bound.args, **bound.kwargs)

    return wrapper


def _patch_actor_attention(mod: ModuleType) -> None:
    """OpenRLHF sets ``attn_implementation = "flash_attention_2"`` whenever samples are packed
    (cli/train_ppo_ray.py 699-704), and flash-attn is a CUDA build. transformers >= 5 gives ``sdpa`` the same
    packed semantics: with no attention mask, the packed ``position_ids`` that OpenRLHF passes
    (ring_attn_utils.py 137-140, restarting at 0 per sample) become a block-diagonal causal mask
    (masking_utils.find_packed_sequence_indices), so each sample attends to itself only. transformers does so
    only when no KV cache is built (masking_utils 851-859); OpenRLHF turns the cache off for every model it
    trains or scores (actor.py 208-210, model.py 159)."""
    cls = require_attr(mod, "Actor", "openrlhf.models.actor.Actor")
    _rebind(cls, "__init__", "openrlhf.models.actor.Actor.__init__", _sdpa_for_flash)


def _patch_regression_attention(mod: ModuleType) -> None:
    """The reward model and the critic (model.py 28-40): the same mapping as ``Actor``."""
    target = "openrlhf.models.model.get_llm_for_sequence_regression"
    _rebind(mod, "get_llm_for_sequence_regression", target, _sdpa_for_flash)


def _patch_deepspeed_shm(mod: ModuleType) -> None:
    """comm/torch.py 31-37 JIT-builds a shared-memory all-reduce op for the CPU accelerator (minutes);
    gloo's own collectives are enough for one or two ranks."""
    _rebind(mod, "build_shm_op", "deepspeed.comm.torch.build_shm_op", lambda _: lambda: None)


PATCHES: tuple[Patch, ...] = (
    Patch(
        "torch",
        "torch.cuda.{set_device,synchronize,empty_cache,current_stream,current_device}",
        "CPU torch raises on CUDA device calls",
        _patch_torch_cuda,
    ),
    Patch(
        "torch",
        "torch.cpu._is_{avx512,avx512_bf16,vnni,amx_tile,amx_fp16}_supported",
        "--runtime.cpu_isa",
        _patch_cpu_isa,
    ),
    Patch(
        "openrlhf.trainer.ppo_utils.replay_buffer",
        "NaiveReplayBuffer.__init__ (target_device)",
        "hard-coded cuda:N device",
        _patch_replay_buffer,
    ),
    Patch("openrlhf.utils.deepspeed.deepspeed", "init_device_mesh", "device mesh built on cuda", _patch_device_mesh),
    Patch(
        "openrlhf.utils.deepspeed.deepspeed",
        "DeepspeedStrategy.get_ds_train_config",
        "FusedAdam needs a C++ JIT build",
        _patch_torch_adam,
    ),
    Patch(
        "openrlhf.utils.distributed_util", "stateless_init_process_group", "NCCL weight sync", _patch_weight_sync_group
    ),
    Patch(
        "openrlhf.trainer.ray.vllm_worker_wrap",
        "WorkerWrap.update_weight",
        "weights received on cuda",
        _patch_vllm_worker_receive,
    ),
    Patch(
        "vllm.model_executor.layers.utils",
        VLLM_GEMM_TARGET,
        "prepacked CPU GEMMs (oneDNN, sgl AMX, zentorch) drop or ignore the weights a sync updates",
        _patch_vllm_cpu_gemm,
    ),
    Patch(
        "vllm.v1.sample.ops.topk_topp_sampler",
        VLLM_SAMPLER_TARGETS[0],
        "inductor's sampling kernel corrupts the engine's heap on AMX CPUs: uncompiled there",
        _patch_vllm_random_sample,
    ),
    Patch(
        "vllm.v1.sample.sampler",
        VLLM_SAMPLER_TARGETS[1],
        "the sampler's other inductor kernel: uncompiled on AMX CPUs too",
        _patch_vllm_logprob_ranks,
    ),
    Patch("deepspeed.comm.torch", "build_shm_op", "shm op JIT build", _patch_deepspeed_shm),
    Patch(
        "openrlhf.models.actor",
        "Actor.__init__ (attn_implementation)",
        "packed samples force flash_attention_2, a CUDA build",
        _patch_actor_attention,
    ),
    Patch(
        "openrlhf.models.model",
        "get_llm_for_sequence_regression (attn_implementation)",
        "packed samples force flash_attention_2, a CUDA build",
        _patch_regression_attention,
    ),
)

# Environment every CPU-runtime process needs; the launcher exports it before Ray starts.
CPU_ENV: dict[str, str] = {
    "DS_ACCELERATOR": "cpu",
    "DS_BUILD_OPS": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache per engine; the tiny models need far less
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def install() -> None:
    """Register every patch as a post-import hook in this process. Safe to call more than once."""
    os.environ[ENV_FLAG] = "cpu"
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    for key, value in ISA_LIBRARY_ENV[isa_level()].items():
        os.environ.setdefault(key, value)
    standin_finder.install()  # ring_attn_utils.py 3-4: flash_attn imported unconditionally
    for patch in PATCHES:
        when_imported(patch.module, patch.apply)
