"""A synthetic protein family: a random sparse Potts model, Gibbs-sampled into an MSA, with exact ΔE.

Used as the ground truth of the Tranception reproduction (Notin et al., "Tranception: protein fitness prediction
with autoregressive transformers and inference-time retrieval", ICML 2022, arXiv 2205.13760): the family plays the
role of the homologs (training data and retrieved MSA) and −ΔE of the wild type's mutants plays the role of a deep
mutational scan. The Potts (inverse-Ising) family model is the one of EVmutation (Hopf et al. 2017).

Model over sequences ``s ∈ {0 … q−1}^L`` with fields ``h [L, q]`` and couplings ``J [L, L, q, q]``
(``J_ij(a, b) = J_ji(b, a)``, ``J_ii = 0``), non-zero only on a sparse set of position pairs (edges):

    E(s) = − Σ_i h_i(s_i) − Σ_{i<j} J_ij(s_i, s_j),          P(s) = exp(−E(s)) / Z

Fitness of a mutant relative to the wild type: ``−ΔE = −(E(mut) − E(wt)) = log P(mut) − log P(wt)``, so a
perfect model of the family's distribution ranks mutants exactly (Spearman 1), and a site-independent model sees
only the fields and the mean effect of the couplings.

Sampler: Gibbs sampling of many independent chains in parallel from uniform random starts. One sweep visits every
position once (a random order per sweep) and redraws ``s_i`` from

    P(s_i = a | s_{−i}) ∝ exp( h_i(a) + Σ_{j ∈ N(i)} J_ij(a, s_j) )

Chains run ``burn_in`` sweeps, then one sequence is kept every ``thin`` sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...core.errors import SeqzooError
from .sequences import AMINO_ACIDS


@dataclass
class PottsModel:
    """Fields ``h [L, q]``, couplings ``J [L, L, q, q]`` (symmetric, zero diagonal) and the edge list."""

    h: Tensor
    J: Tensor
    edges: list[tuple[int, int]]

    @property
    def length(self) -> int:
        return self.h.shape[0]

    @property
    def q(self) -> int:
        return self.h.shape[1]

    def energy(self, seqs: Tensor) -> Tensor:
        """``E(s)`` for integer sequences ``[N, L]`` (float64)."""
        seqs = _check_seqs(seqs, self.length, self.q)
        h, J = self.h.double(), self.J.double()
        pos = torch.arange(self.length)
        e = -h[pos, seqs].sum(-1)
        for i, j in self.edges:
            e = e - J[i, j, seqs[:, i], seqs[:, j]]
        return e

    def delta_energy(self, wild_type: Tensor, mutants: Tensor) -> Tensor:
        """``ΔE = E(mut) − E(wt)`` for mutants ``[N, L]`` of ``wild_type [L]`` (float64)."""
        return self.energy(mutants) - self.energy(wild_type.view(1, -1))

    def neighbours(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.length)]
        for i, j in self.edges:
            out[i].append(j)
            out[j].append(i)
        return out


def _check_seqs(seqs: Tensor, length: int, q: int) -> Tensor:
    if not isinstance(seqs, Tensor) or seqs.dim() != 2 or seqs.shape[1] != length:
        shape = list(seqs.shape) if isinstance(seqs, Tensor) else type(seqs).__name__
        raise SeqzooError(f"sequences must be an integer tensor [N, {length}], got {shape}")
    if seqs.numel() and (int(seqs.min()) < 0 or int(seqs.max()) >= q):
        raise SeqzooError(f"sequence letters must lie in 0 … {q - 1}")
    return seqs.long()


def random_potts(length: int = 48, q: int = 20, *, edges_per_site: float = 2.0, field_std: float = 1.0,
                 coupling_std: float = 1.0, local_fraction: float = 0.5, seed: int = 0) -> PottsModel:
    """A random sparse Potts model: ``round(edges_per_site·L)`` distinct edges, a ``local_fraction`` of them
    between positions 2–4 apart (like contacts in helices and turns), the rest between random pairs; fields
    ``N(0, field_std²)``, couplings on edges ``N(0, coupling_std²)`` (zero-mean per edge block)."""
    if length < 2 or q < 2:
        raise SeqzooError(f"a Potts model needs length ≥ 2 and q ≥ 2, got length={length}, q={q}")
    gen = torch.Generator().manual_seed(seed)
    n_edges = min(int(round(edges_per_site * length)), length * (length - 1) // 2)
    local = [(i, j) for i in range(length) for j in range(i + 2, min(i + 5, length))]
    n_local = min(int(round(local_fraction * n_edges)), len(local))
    edges = {local[k] for k in torch.randperm(len(local), generator=gen)[:n_local].tolist()}
    others = [(i, j) for i in range(length) for j in range(i + 1, length) if (i, j) not in edges]
    for k in torch.randperm(len(others), generator=gen)[:n_edges - len(edges)].tolist():
        edges.add(others[k])
    edges_sorted = sorted(edges)
    h = field_std * torch.randn(length, q, generator=gen, dtype=torch.float64)
    J = torch.zeros(length, length, q, q, dtype=torch.float64)
    for i, j in edges_sorted:
        block = coupling_std * torch.randn(q, q, generator=gen, dtype=torch.float64)
        block = block - block.mean(0, keepdim=True) - block.mean(1, keepdim=True) + block.mean()
        J[i, j], J[j, i] = block, block.T
    return PottsModel(h, J, edges_sorted)


def gibbs_sample(model: PottsModel, n: int, *, burn_in: int = 200, thin: int = 1, chains: int | None = None,
                 seed: int = 0, device=None) -> Tensor:
    """``n`` sequences ``[n, L]`` (int64) from ``P(s) ∝ exp(−E(s))`` by parallel Gibbs sampling (docstring)."""
    if n <= 0 or burn_in < 0 or thin < 1:
        raise SeqzooError(f"gibbs_sample needs n ≥ 1, burn_in ≥ 0, thin ≥ 1; got n={n}, burn_in={burn_in}, "
                          f"thin={thin}")
    chains = n if chains is None else min(chains, n)
    gen = torch.Generator().manual_seed(seed)
    L, q = model.length, model.q
    h = model.h.to(device=device, dtype=torch.float32)
    J = model.J.to(device=device, dtype=torch.float32)
    nbrs = model.neighbours()
    nb_idx = [torch.tensor(nb, dtype=torch.long, device=device) for nb in nbrs]
    # J_i[j] as [|N(i)|, q(b), q(a)] so that J_i[k, s_j] gives the row over a
    nb_J = [J[i, nb].transpose(1, 2).contiguous() for i, nb in enumerate(nb_idx)]
    state = torch.randint(q, (chains, L), generator=gen).to(device)
    rows = torch.arange(chains, device=device)

    def sweep() -> None:
        for i in torch.randperm(L, generator=gen).tolist():
            logits = h[i].expand(chains, q).clone()
            if len(nbrs[i]):
                nb = nb_idx[i]
                partners = state[:, nb]  # [C, k]
                logits += nb_J[i][torch.arange(len(nbrs[i]), device=device), partners].sum(1)
            u = torch.rand(chains, 1, generator=gen).to(device)
            cdf = torch.softmax(logits, -1).cumsum(-1)
            state[rows, i] = (u > cdf).sum(-1).clamp_max(q - 1)

    for _ in range(burn_in):
        sweep()
    out = []
    kept = 0
    while kept < n:
        for _ in range(thin):
            sweep()
        take = min(chains, n - kept)
        out.append(state[:take].clone())
        kept += take
    return torch.cat(out).cpu()


def to_strings(seqs: Tensor) -> list[str]:
    """Integer sequences ``[N, L]`` (q = 20) as amino-acid strings."""
    return ["".join(AMINO_ACIDS[int(a)] for a in row) for row in seqs]


def all_single_mutants(wild_type: Tensor, q: int = 20) -> tuple[Tensor, list[str]]:
    """Every single substitution of ``wild_type [L]``: sequences ``[L·(q−1), L]`` and ProteinGym mutant strings."""
    wt = wild_type.long()
    seqs, names = [], []
    for i in range(wt.shape[0]):
        for a in range(q):
            if a != int(wt[i]):
                s = wt.clone()
                s[i] = a
                seqs.append(s)
                names.append(f"{AMINO_ACIDS[int(wt[i])]}{i + 1}{AMINO_ACIDS[a]}")
    return torch.stack(seqs), names


def random_double_mutants(wild_type: Tensor, n: int, q: int = 20, *, seed: int = 0) -> tuple[Tensor, list[str]]:
    """``n`` distinct double substitutions at uniformly random position pairs (random new letters)."""
    wt = wild_type.long()
    L = wt.shape[0]
    if n > (L * (L - 1) // 2) * (q - 1) ** 2:
        raise SeqzooError(f"asked for {n} distinct double mutants; a length-{L} wild type has fewer")
    gen = torch.Generator().manual_seed(seed)
    seen: set[tuple[int, int, int, int]] = set()
    seqs, names = [], []
    while len(seqs) < n:
        i, j = sorted(torch.randperm(L, generator=gen)[:2].tolist())
        a = (int(wt[i]) + 1 + int(torch.randint(q - 1, (1,), generator=gen))) % q
        b = (int(wt[j]) + 1 + int(torch.randint(q - 1, (1,), generator=gen))) % q
        if (i, a, j, b) in seen:
            continue
        seen.add((i, a, j, b))
        s = wt.clone()
        s[i], s[j] = a, b
        seqs.append(s)
        names.append(f"{AMINO_ACIDS[int(wt[i])]}{i + 1}{AMINO_ACIDS[a]}:{AMINO_ACIDS[int(wt[j])]}{j + 1}"
                     f"{AMINO_ACIDS[b]}")
    return torch.stack(seqs), names


__all__ = ["PottsModel", "all_single_mutants", "gibbs_sample", "random_double_mutants", "random_potts",
           "to_strings"]
