"""The tiny model builder: deterministic for a seed, loadable by transformers, small, with a chat template."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from openrlhf_maestro import tiny_model


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_other_weights(tmp_path, tiny_model_dir):
    again = tiny_model.build(tmp_path / "again", seed=0, corpus_files=_demo_corpus())
    assert digest(again) == digest(tiny_model_dir)
    other = tiny_model.build(tmp_path / "other", seed=1, corpus_files=_demo_corpus())
    assert digest(other)["model.safetensors"] != digest(tiny_model_dir)["model.safetensors"]
    assert digest(other)["tokenizer.json"] == digest(tiny_model_dir)["tokenizer.json"]


def _demo_corpus() -> list[Path]:
    from _support import REPO

    return [REPO / "examples/data/demo_prompts.jsonl"]


def test_loads_generates_and_is_tiny(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert model.config.model_type == "qwen2"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == text  # byte-level BPE round-trips
    for tag in tiny_model.TAG_TOKENS:  # the format tags are single tokens
        assert len(tok(tag, add_special_tokens=False).input_ids) == 1
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4 or out[0, -1].item() == tok.eos_token_id


def test_reward_kind_has_a_scalar_head(tmp_path):
    out = tiny_model.build(tmp_path / "rm", seed=0, kind="reward")
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 1) and torch.isfinite(logits).all()


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--kind must be 'actor' or 'reward', got 'critic'"):
        tiny_model.build(tmp_path, kind="critic")
