"""Build a tiny, randomly initialized Qwen2 causal LM (or reward model) with a locally trained tokenizer.

    python -m openrlhf_maestro.tiny_model OUT_DIR [--seed N] [--kind actor|reward]

No network: the byte-level BPE tokenizer is trained with the ``tokenizers`` library on the demo
prompts shipped in this package plus a short built-in text, and the weights come from a seeded
``torch.Generator``. The same seed gives byte-identical files. The result loads with
``AutoModelForCausalLM`` / ``AutoTokenizer`` and runs in vLLM's CPU build (head size 64, bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Small enough to train in seconds on CPU, large enough that vLLM's CPU attention kernels accept it
# (head_dim 64) and that a few GRPO steps move the weights measurably.
ARCH = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
VOCAB_SIZE = 1024
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Tags the format reward looks for; single tokens so a tiny policy can learn to emit them.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen's ChatML template, without tool calls.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_BUILTIN_TEXT = """\
Think step by step, then give the final answer inside answer tags.
<think> The question asks for a short reason. </think> <answer> yes </answer>
Write a short, kind reply. Keep it brief and clear. Explain the idea in one sentence.
What is two plus three? Five. What is the capital of France? Paris.
A good answer is correct, well formatted, and not longer than it needs to be.
"""


def _corpus(extra_files: list[Path] | None = None) -> list[str]:
    """The built-in text plus every string value of the given JSONL files (e.g. the demo prompts)."""
    lines = _BUILTIN_TEXT.splitlines()
    for path in extra_files or []:
        for row in Path(path).read_text(encoding="utf-8").splitlines():
            if row.strip():
                lines.extend(str(v) for v in json.loads(row).values() if isinstance(v, str))
    return lines


def build_tokenizer(corpus_files: list[Path] | None = None):
    """A byte-level BPE tokenizer with ChatML special tokens, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS + TAG_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(corpus_files), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=ARCH["max_position_embeddings"],
    )


def build(out_dir: str | Path, seed: int = 0, kind: str = "actor", corpus_files: list[Path] | None = None) -> Path:
    """Write a tiny model and tokenizer to ``out_dir``; returns the directory.

    Args:
        out_dir: created if missing; existing files of the same names are overwritten.
        seed: seeds the weight initialization (the tokenizer does not depend on it).
        kind: ``actor`` (Qwen2ForCausalLM) or ``reward`` (a Qwen2 backbone with a scalar ``score`` head,
            loadable by OpenRLHF's ``get_llm_for_sequence_regression``).
        corpus_files: JSONL files whose string values are added to the tokenizer's training text.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    if kind not in ("actor", "reward"):
        raise ValueError(f"--kind must be 'actor' or 'reward', got {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus_files)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="bfloat16",
        **ARCH,
    )
    torch.manual_seed(seed)
    if kind == "actor":
        model = AutoModelForCausalLM.from_config(config)
    else:
        from transformers import AutoModelForSequenceClassification

        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if kind == "actor":
        GenerationConfig(
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
        ).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openrlhf_maestro.tiny_model", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="directory to write the model and tokenizer to")
    parser.add_argument("--seed", type=int, default=0, help="weight-initialization seed (default 0)")
    parser.add_argument("--kind", choices=["actor", "reward"], default="actor", help="causal LM or reward model")
    parser.add_argument(
        "--corpus",
        type=Path,
        action="append",
        default=[],
        help="JSONL file to add to the tokenizer's text (repeatable)",
    )
    args = parser.parse_args(argv)
    out = build(args.out_dir, seed=args.seed, kind=args.kind, corpus_files=args.corpus)
    n_params = _count_params(out)
    print(f"tiny {args.kind} model: {n_params / 1e6:.2f}M parameters, seed {args.seed} -> {out}")
    return 0


def _count_params(out: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():
                total += math.prod(st.get_slice(key).get_shape())
    return total


if __name__ == "__main__":
    sys.exit(main())
