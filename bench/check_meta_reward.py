"""Monte-Carlo check of what the paper's meta-reward can learn, and of the alignment meta-reward's values.

    python bench/check_meta_reward.py                 # ~10 s on one core; docs/method.md quotes its output

Setting: groups of n responses, K objectives, r̃ = the per-objective z-score inside the group (the plugin's
`group_zscore`), uniform prior, every response draws its own emphasis a_ij uniformly (π does not depend on the
response), R_ij = Σ_k w_k(a_ij) r̃_ijk, Â = group_norm(R) (the plugin's, OpenRLHF's GRPO advantage).

1. Flattery. Writing S_ij = Σ_k p_k r̃_ijk (Σ_j S_ij = 0 in every group), the centred reward is exactly, in
   expectation over the other responses' draws,
       E[R_ij − mean_i R | r̃_i, a_ij] = (1 − β + β/n)·S_ij + β(1 − 1/n)·r̃_ij,a_ij
   and group_norm divides it by σ_i (first order: times E[1/σ_i]). Checked by least squares on [1, S_ij, r̃_ij,a].
2. Nothing to learn per family. Two families whose raw rewards differ (family 0: objective 0 varies a lot and
   objective 1 hardly; family 1 the reverse): E[Â_ij | family, a_ij = a] is 0 for every a (up to Monte-Carlo
   error), and Σ_j Â_ij = 0 exactly in every group.
3. The alignment meta-reward in the same setting, with a target that follows objective 0 in family 0 and
   objective 1 in family 1: E[G_i(a) | family] = E[Σ_j Â_ij(a)·u_ij | family] ranks the right emphasis first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openrlhf_maestro.method import group_norm, group_zscore, weight_matrix  # noqa: E402
from openrlhf_maestro.method.aggregation import alignment_values  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=100_000)
    p.add_argument("--n", type=int, default=4, help="responses per group")
    p.add_argument("--k", type=int, default=3, help="objectives")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    g, n, k, beta = args.groups, args.n, args.k, args.beta
    group_ids = torch.arange(g * n) // n
    prior = torch.full((k,), 1.0 / k)
    w = weight_matrix(prior, beta)  # (K, K): row a is w(a)

    # ---- 1. flattery --------------------------------------------------------------------------------------
    raw = torch.randn(g * n, k, generator=gen)
    r_tilde = group_zscore(raw, group_ids).double()
    actions = torch.randint(k, (g * n,), generator=gen)
    rewards = (w[actions].double() * r_tilde).sum(-1)
    adv = group_norm(rewards.float(), group_ids).double()
    s = r_tilde @ prior.double()
    x = r_tilde.gather(-1, actions[:, None]).squeeze(-1)
    design = torch.stack([torch.ones_like(s), s, x], -1)
    centred = rewards - rewards.view(g, n).mean(-1).repeat_interleave(n)  # R − mean_i R (dr_grpo's advantage)
    coef_c = torch.linalg.lstsq(design, centred[:, None]).solution.squeeze(-1)
    coef = torch.linalg.lstsq(design, adv[:, None]).solution.squeeze(-1)
    inv_sigma = (1.0 / (rewards.view(g, n).std(-1) + 1e-9)).mean()  # unbiased σ_i, as group_norm
    print(
        f"1. flattery (n={n}, K={k}, beta={beta}, {g} groups), least squares of the advantage on [1, S_ij, r~_ij,a]:"
    )
    print(
        f"   R - mean_i R: coefficient of r~_ij,a {coef_c[2]:.4f} (exact: beta (1 - 1/n) = {beta * (1 - 1 / n):.4f}), "
        f"of S_ij {coef_c[1]:.4f} (exact: 1 - beta + beta/n = {1 - beta + beta / n:.4f})"
    )
    print(
        f"   group_norm A^: coefficient of r~_ij,a {coef[2]:.4f} (first order: {beta * (1 - 1 / n):.4f} x "
        f"E[1/sigma_i] "
        f"{inv_sigma:.4f} = {beta * (1 - 1 / n) * inv_sigma:.4f}), of S_ij {coef[1]:.4f} (first order: "
        f"{(1 - beta + beta / n) * inv_sigma:.4f})"
    )

    # ---- 2. family-level values of the paper's meta-reward ------------------------------------------------
    family = (torch.arange(g * n) // n) % 2
    scale = torch.where(family[:, None] == 0, torch.tensor([3.0, 0.1, 1.0]), torch.tensor([0.1, 3.0, 1.0]))
    raw = torch.randn(g * n, k, generator=gen) * scale[:, :k] + torch.where(family[:, None] == 0, 1.0, -1.0)
    r_tilde = group_zscore(raw, group_ids)
    actions = torch.randint(k, (g * n,), generator=gen)
    adv = group_norm((w[actions] * r_tilde).sum(-1), group_ids).double()
    print("2. family-level value E[A^ | family, a] of the paper's meta-reward (mean +- standard error):")
    for f in (0, 1):
        cells = []
        for a in range(k):
            sel = adv[(family == f) & (actions == a)]
            cells.append(f"a={a}: {sel.mean():+.4f} +- {sel.std() / sel.numel() ** 0.5:.4f}")
        print(f"   family {f}: " + ", ".join(cells))
    print(f"   max_i |sum_j A^_ij| = {adv.view(g, n).sum(-1).abs().max():.2e}")

    # ---- 3. the alignment meta-reward's G in the same families --------------------------------------------
    right = torch.where(family == 0, raw[:, 0], raw[:, 1])
    target = right + 0.5 * torch.randn(g * n, generator=gen) * right.std()
    gain, labelled = alignment_values(r_tilde, group_ids, target, w)
    fam_group = torch.arange(g) % 2
    print(
        "3. family-level value E[G(a) | family] of the alignment meta-reward (target follows objective 0 in family 0,"
    )
    print("   objective 1 in family 1; mean +- standard error):")
    for f in (0, 1):
        sel = gain[labelled & (fam_group == f)].double()
        cells = [f"a={a}: {sel[:, a].mean():+.4f} +- {sel[:, a].std() / sel.shape[0] ** 0.5:.4f}" for a in range(k)]
        print(f"   family {f}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
