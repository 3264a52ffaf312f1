"""The weight-sync check's parameter part without vLLM: vLLM-named parameters (fused q/k/v and gate/up, a padded
vocabulary, a tensor-parallel shard) against the saved actor's safetensors, read one tensor at a time."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from openrlhf_maestro.runtime.weight_sync_check import SavedWeights, compare_parameters, merge_ranks


def _vllm_state(model_dir) -> dict[str, torch.Tensor]:
    """What a one-rank vLLM engine holds for the tiny Qwen2 actor, built here by hand from the HF names."""
    hf = load_file(next(model_dir.glob("*.safetensors")))
    out = {}
    for name, tensor in hf.items():
        if ".k_proj." in name or ".v_proj." in name or ".up_proj." in name:
            continue
        if ".q_proj." in name:
            stem, suffix = name.split(".q_proj.")
            parts = [hf[f"{stem}.{p}.{suffix}"] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"{stem}.qkv_proj.{suffix}"] = torch.cat(parts)
        elif ".gate_proj." in name:
            stem, suffix = name.split(".gate_proj.")
            out[f"{stem}.gate_up_proj.{suffix}"] = torch.cat([tensor, hf[f"{stem}.up_proj.{suffix}"]])
        else:
            out[name] = tensor.clone()
    embed = out["model.embed_tokens.weight"]
    out["model.embed_tokens.weight"] = torch.cat(
        [embed, torch.zeros(64 - embed.shape[0] % 64, embed.shape[1], dtype=embed.dtype)]
    )
    out["lm_head.weight"] = out["model.embed_tokens.weight"]  # tied, padded to a multiple of 64 rows
    return out


def test_vllm_named_parameters_equal_the_saved_actor_and_a_changed_one_is_named(tiny_model_dir):
    state = _vllm_state(tiny_model_dir)
    report = compare_parameters(state.items(), tiny_model_dir)
    assert report["equal"] and report["compared"] == report["tensors"] == len(state), report
    assert report["mismatched"] == report["missing"] == report["sharded"] == [] and report["on_cpu"] == 0
    stale = dict(state)
    name = "model.layers.1.self_attn.qkv_proj.weight"
    stale[name] = state[name].clone()
    stale[name][-1, 0] += 0.5  # a value of v_proj's last row: the fused read must reach it
    report = compare_parameters(stale.items(), tiny_model_dir)
    assert not report["equal"] and report["mismatched"] == [f"{name}: max |diff| {report['max_abs_diff']:.3g}"]
    assert report["max_abs_diff"] > 0.4


def test_a_tensor_parallel_shard_is_counted_not_compared_and_an_unknown_name_is_missing(tiny_model_dir):
    state = _vllm_state(tiny_model_dir)
    name = "model.layers.0.mlp.down_proj.weight"
    shard = {**state, name: state[name][:, : state[name].shape[1] // 2], "model.extra.weight": torch.zeros(2)}
    report = compare_parameters(shard.items(), tiny_model_dir, tp_size=2)
    assert report["sharded"] == [name] and report["missing"] == ["model.extra.weight"] and not report["equal"]
    del shard["model.extra.weight"]
    report = compare_parameters(shard.items(), tiny_model_dir, tp_size=2)
    assert report["equal"] and report["compared"] == len(state) - 1
    report = compare_parameters(shard.items(), tiny_model_dir, tp_size=1)  # one rank: a shape change is a miss
    assert not report["equal"] and report["mismatched"][0].startswith(f"{name}: shape")


def test_saved_weights_fold_hf_names_and_read_the_tied_head(tiny_model_dir):
    saved = SavedWeights(tiny_model_dir)
    hf = load_file(next(tiny_model_dir.glob("*.safetensors")))
    stem = "model.layers.0.mlp"
    expected = torch.cat([hf[f"{stem}.gate_proj.weight"], hf[f"{stem}.up_proj.weight"]])
    assert torch.equal(saved.get(f"{stem}.gate_up_proj.weight"), expected)
    head = hf.get("lm_head.weight", hf["model.embed_tokens.weight"])  # saved, or tied to the embedding
    assert torch.equal(saved.get("lm_head.weight"), head)
    assert saved.get("model.nothing.weight") is None


def test_an_engine_is_equal_only_if_every_tensor_parallel_rank_is(tiny_model_dir):
    state = _vllm_state(tiny_model_dir)
    name = "model.norm.weight"
    good = compare_parameters(state.items(), tiny_model_dir, tp_size=2)
    bad = compare_parameters({**state, name: state[name] + 1}.items(), tiny_model_dir, tp_size=2)
    merged = merge_ranks([good, bad])
    assert not merged["equal"] and merged["ranks"] == 2 and merged["tensors"] == 2 * len(state)
    assert merged["mismatched"] == [f"rank 1: {name}: max |diff| 1"] and merged["max_abs_diff"] == 1.0
    assert merge_ranks([good, good])["equal"]
