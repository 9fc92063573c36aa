"""Model 3 with a categorical neighbour head (generator ``transformer-cat``).

The ``transformer`` / ``transformer-mse`` generators regress every adjacency entry as an independent ±1 channel and
keep it where it is > 0. A new node needs one edge to an earlier node, but its probability is spread over ≈ 4
candidates, none above ½, so 20–32 % of generated nodes stay isolated (docs/repro/spider-web-graphgen.md). The paper's
code offers a categorical treatment of neighbours (``use_categorical_for_neighbors``); this is our version of it for
the full (adjacency-row) tokens, as a *separate* model class — :class:`GraphWebTransformer` is not touched.

Edges are decided causally: the edge {i, j}, i < j, belongs to node j (the later node) and is decided at j's step.
With BFS order (one component, as every procedural web) each node k ≥ 1 has at least one earlier neighbour, and
its earliest-index earlier neighbour is its BFS parent p_k = min{j < k : A_kj = 1}.

Input (teacher forcing and generation alike): token k = [e_k, x_k, a_k] with the adjacency part masked to the
edges already decided, ã_kj = a_kj for j < k and −1 for j ≥ k (the entries to later nodes, decided later, are never
seen). The trunk (condition encoder, start token, causal blocks) is :class:`GraphWebTransformer`'s; h_k is the final
(layer-normed) state at position k, which has read tokens < k.

Within a token the order is flag → coordinates → edges:

    (ê_k, x̂_k) = W_out h_k                                   (MSE head, as ``transformer-mse``)
    s_kj = ⟨Q [h_k; x_k], K [h_{j+1}; x_j]⟩/√D − softplus(α) ‖x_k − x_j‖² + β,   j < k
    parent:  P(p_k = j) = softmax_{j<k} s^par_kj
    extra:   P(A_kj = 1 | p_k) = σ(s^ext_kj),  p_k < j < k         (independent Bernoulli)

h_{j+1} is the state that has just read token j (so it "is" node j; j + 1 ≤ k keeps it causal) and x_k are node k's
own coordinates (the teacher-forced ones in training, the just-generated ones at generation: edges come after
coordinates in the token). s^par and s^ext have their own Q, K, α, β. Loss, over real nodes k ≥ 1 of the batch:

    L = mean_{B,T,4} (t̂_kc − t_kc)²                            (flag and coordinates, all rows; padding → (−1, 0))
      + mean_k [ −log P(p_k = true parent) ]                   (cross-entropy, single label)
      + mean_{k, p_k<j<k} BCE(s^ext_kj, A_kj)

The parent is a single label (the BFS parent, i.e. the earliest earlier neighbour) rather than a multi-label softmax
over all earlier neighbours: it is a deterministic function of the graph, so parent × extras is an exact
factorisation of node k's earlier-neighbour set (the extras then range over p_k < j < k only, the entries j < p_k
being 0 by definition), and the loss is a proper likelihood. A multi-label softmax would again spread the mass over
the true neighbours, the dilution this head is meant to remove.

Generation, step k: (1) flag and coordinates from the model's output k (snapped as in :func:`snap_tokens`); a
padding flag ends the web (every later row is padding, as in the data). (2) With x_k written into token k, the
parent p_k = argmax_j s^par_kj over earlier nodes whose degree is below ``max_degree`` (or a sample at
``temperature`` > 0), then extras p_k < j < k with σ(s^ext_kj) > ½, strongest first, while both degrees stay below
the cap. So every generated node k ≥ 1 has an edge to an earlier node unless every earlier node is at the cap.
The edges are written into row k (the causal input form) and, at the end, mirrored into the earlier rows so that
the output is ordinary full tokens for :class:`~seqzoo.tasks.webs.tokenizer.WebTokenizer.decode`.

The three terms are added with weight 1 (chosen before any run, not tuned). The edge heads read the teacher-forced
coordinates x_k in training but the generated ones (the MSE head's conditional mean) at generation: the one place
where generation's inputs are not the data's, as for every AR model's earlier tokens. Because output k reads x_k,
the repro's strict probe (outputs ≤ j unchanged when token j moves) does not apply to this head as it stands; the
tests check the finer property: outputs < j and output j's flag/xyz unchanged, and token j's own edges (its
decisions) never read back at step j.

``forward`` returns ``[B, T, 4 + 2M]``: flag, coordinates, the parent logits s^par_k· and the extra logits s^ext_k·,
both −1e4 at j ≥ k. Output k reads tokens < k and the coordinates of token k only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from .graph_transformer import GraphWebTransformer, snap_tokens

MASKED = -1e4


class PairScorer(nn.Module):
    """s_kj = ⟨Q [h_k; x_k], K [g_j; x_j]⟩/√D − softplus(α) ‖x_k − x_j‖² + β for all (k, j)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.q = nn.Linear(d_model + 3, d_model)
        self.k = nn.Linear(d_model + 3, d_model)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.beta = nn.Parameter(torch.zeros(()))
        self.scale = 1.0 / math.sqrt(d_model)

    def forward(self, hq: Tensor, xq: Tensor, hk: Tensor, xk: Tensor) -> Tensor:
        q = self.q(torch.cat([hq, xq], -1))
        k = self.k(torch.cat([hk, xk], -1))
        dist = ((xq[:, :, None, :] - xk[:, None, :, :]) ** 2).sum(-1)
        return q @ k.transpose(-1, -2) * self.scale - F.softplus(self.alpha) * dist + self.beta


def causal_adjacency(tokens: Tensor) -> Tensor:
    """Tokens with each adjacency row masked to the earlier nodes: entry (k, j) kept for j < k, −1 for j ≥ k."""
    length, m = tokens.shape[1], tokens.shape[2] - 4
    keep = torch.arange(m, device=tokens.device)[None, :] < torch.arange(length, device=tokens.device)[:, None]
    adj = torch.where(keep, tokens[..., 4:], torch.full_like(tokens[..., 4:], -1.0))
    return torch.cat([tokens[..., :4], adj], -1)


def parent_targets(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """``(parent [B, T] long, has_parent [B, T] bool)``: the earliest earlier neighbour of each real node k ≥ 1."""
    earlier = causal_adjacency(tokens)[..., 4:] > 0                             # [B, T, M], only j < k
    has = earlier.any(-1) & (tokens[..., 0] > 0)
    idx = torch.arange(earlier.shape[-1], device=tokens.device)
    parent = torch.where(earlier, idx, earlier.shape[-1]).min(-1).values
    return torch.where(has, parent, 0), has


def adjacency_loss(parent_logits: Tensor, extra_logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(cross-entropy of the parent, BCE of the extras p_k < j < k), each averaged over its terms (0 if none)."""
    length = tokens.shape[1]
    parent, has = parent_targets(tokens)
    m = parent_logits.shape[-1]
    if has.any():
        ce = F.cross_entropy(parent_logits[has], parent[has])
    else:
        ce = parent_logits.sum() * 0.0
    j = torch.arange(m, device=tokens.device)
    k = torch.arange(length, device=tokens.device)
    cand = (j[None, None, :] < k[None, :, None]) & (j[None, None, :] > parent[..., None]) & has[..., None]
    target = (tokens[..., 4:4 + m] > 0).to(extra_logits.dtype)
    if cand.any():
        bce = F.binary_cross_entropy_with_logits(extra_logits[cand], target[cand])
    else:
        bce = extra_logits.sum() * 0.0
    return ce, bce


def choose_edges(parent_logits: Tensor, extra_logits: Tensor, degree: Tensor, n_earlier: int,
                 max_degree: int | None, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Edges of the current node to earlier nodes 0..n_earlier−1 for one batch row set.

    ``parent_logits``/``extra_logits`` ``[B, M]``, ``degree`` ``[B, M]`` long (updated copy returned). Returns
    ``(row [B, M] bool, degree)``: the argmax (or sampled) parent among earlier nodes below the cap, then the extras
    j > parent with σ(s) > ½, strongest first, while both degrees stay below the cap.
    """
    batch, m = parent_logits.shape
    degree = degree.clone()
    row = torch.zeros(batch, m, dtype=torch.bool, device=parent_logits.device)
    if n_earlier == 0:
        return row, degree
    cap = m + 1 if max_degree is None else max_degree
    idx = torch.arange(m, device=parent_logits.device)
    allowed = (idx[None, :] < n_earlier) & (degree < cap)
    logits = parent_logits.masked_fill(~allowed, float("-inf"))
    ok = allowed.any(-1)
    if temperature > 0:
        probs = torch.softmax(logits / temperature, -1)
        probs = torch.where(ok[:, None], probs, torch.full_like(probs, 1.0 / m))
        parent = torch.multinomial(probs, 1, generator=generator)[:, 0]
    else:
        parent = logits.argmax(-1)
    for b in range(batch):
        if not ok[b]:
            continue
        p = int(parent[b])
        row[b, p] = True
        degree[b, p] += 1
        own = 1
        scores = extra_logits[b, :n_earlier]
        for j in torch.argsort(scores, descending=True, stable=True).tolist():
            if own >= cap:
                break
            if j > p and scores[j] > 0 and degree[b, j] < cap:
                row[b, j] = True
                degree[b, j] += 1
                own += 1
    return row, degree


class GraphWebCatTransformer(GraphWebTransformer):
    """Model 3 with an MSE flag/coordinate head and a categorical parent + Bernoulli extra-edge head."""

    kind = "transformer-cat"

    def __init__(self, token_dim: int, max_nodes: int, n_features: int = 14, d_model: int = 64, n_layers: int = 3,
                 n_heads: int = 4, ff_mult: int = 4, cond_drop_prob: float = 0.25, causal: bool = True,
                 head: str = "categorical", max_degree: int | None = 5):
        if head != "categorical":
            raise SeqzooError(f"GraphWebCatTransformer has only head='categorical', got {head!r}")
        if token_dim != 4 + max_nodes:
            raise SeqzooError(f"the categorical neighbour head needs full tokens (token_dim = 4 + max_nodes = "
                              f"{4 + max_nodes}), got token_dim={token_dim}")
        super().__init__(token_dim, max_nodes, n_features, d_model, n_layers, n_heads, ff_mult, cond_drop_prob,
                         causal, head="mse")
        self.head = "categorical"
        self.max_degree = max_degree
        self.options.update(head="categorical", max_degree=max_degree)
        self.out = nn.Linear(d_model, 4)
        self.parent_head = PairScorer(d_model)
        self.extra_head = PairScorer(d_model)

    def raw(self, tokens: Tensor, cond: Tensor, drop: Tensor | None = None) -> Tensor:
        """``[B, T, 4 + 2M]``: flag, xyz, parent logits, extra-edge logits (−1e4 where j ≥ k)."""
        self._check(tokens, cond)
        batch, length, _ = tokens.shape
        if drop is None:
            drop = torch.zeros(batch, dtype=torch.bool, device=cond.device)
        inp = causal_adjacency(tokens)
        memory, visible = self.cond(cond, drop)
        start = self.start.to(tokens.dtype).expand(batch, 1, -1)
        h = torch.cat([start, self.inp(inp[:, :length - 1])], 1) + self.pos[:length].to(tokens.dtype)
        for block in self.blocks:
            h = block(h, memory, visible)
        h = self.norm(h)
        # node j's key is the state that has read token j (position j + 1); node T − 1's key is never used
        # (no query k > T − 1), so a zero stands in for it
        query, keys = h, torch.cat([h[:, 1:], torch.zeros_like(h[:, :1])], 1)
        xyz = tokens[..., 1:4]
        m = self.max_nodes
        k = torch.arange(length, device=tokens.device)
        earlier = k[None, :] < k[:, None]                                          # [T, T]: j < k
        full = torch.full((batch, length, m), MASKED, dtype=tokens.dtype, device=tokens.device)
        logits = []
        for scorer in (self.parent_head, self.extra_head):
            s = scorer(query, xyz, keys, xyz).masked_fill(~earlier, MASKED)
            logits.append(torch.cat([s, full[..., length:]], -1) if length < m else s)
        return torch.cat([self.out(query), *logits], -1)

    def forward(self, tokens: Tensor, cond: Tensor, drop: Tensor | None = None) -> Tensor:
        return self.raw(tokens, cond, drop)

    def loss(self, tokens: Tensor, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        drop = torch.rand(tokens.shape[0], generator=generator, device=tokens.device) < self.cond_drop_prob
        out = self.raw(tokens, cond, drop)
        m = self.max_nodes
        mse = ((out[..., :4] - tokens[..., :4]) ** 2).mean()
        ce, bce = adjacency_loss(out[..., 4:4 + m], out[..., 4 + m:], tokens)
        return mse + ce + bce

    @torch.no_grad()
    def generate(self, cond: Tensor, *, cond_scale: float = 1.0, snap: bool = True, drop_condition: bool = False,
                 temperature: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Full node tokens ``[B, M, 4 + M]`` (symmetric adjacency). ``temperature`` > 0 samples the parent;
        ``snap`` is accepted for interface compatibility (the flag is always snapped: it decides the stop)."""
        batch, m = cond.shape[0], self.max_nodes
        drop = torch.full((batch,), bool(drop_condition), dtype=torch.bool, device=cond.device)

        def predict(seq: Tensor) -> Tensor:
            if drop_condition:
                return self.forward(seq, cond, drop)[:, -1]
            return self.guided(seq, cond, cond_scale)[:, -1]

        pad = torch.full((m + 4,), -1.0, dtype=cond.dtype, device=cond.device)
        pad[1:4] = 0.0
        out = pad.expand(batch, m, -1).clone()
        alive = torch.ones(batch, dtype=torch.bool, device=cond.device)
        degree = torch.zeros(batch, m, dtype=torch.long, device=cond.device)
        for k in range(m):
            seq = out[:, :k + 1].clone()
            seq[:, k] = pad
            head = snap_tokens(predict(seq)[:, None, :4])[:, 0]                # flag ±1, exact padding
            alive = alive & (head[:, 0] > 0)
            row = torch.where(alive[:, None], head, pad[:4])
            seq[:, k, :4] = row
            pred = predict(seq)
            edges, new_degree = choose_edges(pred[:, 4:4 + m], pred[:, 4 + m:], degree, k, self.max_degree,
                                             temperature, generator)
            edges = edges & alive[:, None]
            degree = torch.where(alive[:, None], new_degree, degree)
            own = edges.sum(-1)
            degree[:, k] += own
            out[:, k, :4] = row
            out[:, k, 4:] = torch.where(edges, 1.0, -1.0)
        # mirror the causal rows into the earlier rows: ordinary symmetric full tokens
        adj = out[..., 4:] > 0
        sym = adj | adj.transpose(1, 2)
        out[..., 4:] = torch.where(sym, 1.0, -1.0)
        return out


__all__ = ["GraphWebCatTransformer", "PairScorer", "adjacency_loss", "causal_adjacency", "choose_edges",
           "parent_targets"]
