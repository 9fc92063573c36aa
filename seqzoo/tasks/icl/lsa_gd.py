"""Linear self-attention that performs gradient descent in context (von Oswald et al.'s construction).

Paper: "Transformers learn in-context by gradient descent", von Oswald, Niklasson, Randazzo, Sacramento,
Mordvintsev, Zhmoginov and Vladymyrov, ICML 2023, arXiv 2212.07677.

Tokens: the in-context examples e_i = (x_i, y_i) ∈ R^{d+1}, i = 1 … N, then queries e_q = (x_q, 0). A linear
self-attention (LSA) layer, with no softmax, no normalisation and keys/values taken from the N context tokens,
updates every token j:

    e_j ← e_j + Σ_h P_h W_V,h Σ_{i=1}^{N} e_i (W_K,h e_i)ᵀ (W_Q,h e_j).

Construction (one head): W_K = W_Q = [[I_d, 0], [0, 0]], W_V = [[0, 0], [w₀ᵀ, −1]] with w₀ = 0, P = (η/N) I.
Then only the y-slot changes, by (η/N) Σ_i (w₀ᵀx_i − y_i) x_iᵀ x_j = −Δwᵀ x_j, where
Δw = −η ∇L(w₀) = (η/N) Σ_i (y_i − w₀ᵀx_i) x_i is one gradient step on L(w) = 1/(2N) Σ_i (wᵀx_i − y_i)². A query
token's y-slot starts at 0, so it ends at −w₁ᵀx_q: the prediction of one GD step is read with a sign flip,
ŷ_q = −(e_q)_y. Context tokens end with y-slot y_i − w₁ᵀx_i (their residuals), so stacking K such layers
(each updating context and query tokens) performs K steps of gradient descent with the same η.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.errors import SeqzooError


class LinearSelfAttention(nn.Module):
    """One LSA layer on tokens ``[B, T, D]`` whose first ``n_context`` tokens are the in-context examples."""

    def __init__(self, dim: int, *, n_heads: int = 1, key_size: int | None = None, init_std: float = 0.02):
        super().__init__()
        if dim < 2 or n_heads < 1:
            raise SeqzooError(f"LinearSelfAttention needs dim >= 2 and n_heads >= 1, got {dim}, {n_heads}")
        key_size = key_size or dim
        self.dim, self.n_heads, self.key_size = dim, n_heads, key_size
        self.w_q = nn.Parameter(torch.randn(n_heads, key_size, dim) * init_std)
        self.w_k = nn.Parameter(torch.randn(n_heads, key_size, dim) * init_std)
        self.w_v = nn.Parameter(torch.randn(n_heads, dim, dim) * init_std)
        self.proj = nn.Parameter(torch.randn(n_heads, dim, dim) * init_std)

    def forward(self, tokens: Tensor, n_context: int) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            raise SeqzooError(f"tokens must be [B, T, {self.dim}], got {list(tokens.shape)}")
        if not 1 <= n_context <= tokens.shape[1]:
            raise SeqzooError(f"n_context must be in [1, T={tokens.shape[1]}], got {n_context}")
        context = tokens[:, :n_context]
        q = torch.einsum("hkd,btd->bhtk", self.w_q, tokens)
        k = torch.einsum("hkd,bsd->bhsk", self.w_k, context)
        v = torch.einsum("hed,bsd->bhse", self.w_v, context)
        scores = torch.einsum("bhtk,bhsk->bhts", q, k)          # linear: no softmax, no 1/N
        mixed = torch.einsum("bhts,bhse->bhte", scores, v)
        return tokens + torch.einsum("hfe,bhte->btf", self.proj, mixed)


class LSARegressor(nn.Module):
    """A stack of LSA layers read as an in-context regressor: ``predict(X, y, xq) = −(final query y-slot)``."""

    def __init__(self, d: int, *, n_layers: int = 1, n_heads: int = 1, init_std: float = 0.02):
        super().__init__()
        self.d = d
        self.layers = nn.ModuleList(LinearSelfAttention(d + 1, n_heads=n_heads, init_std=init_std)
                                    for _ in range(n_layers))

    @staticmethod
    def tokens(X: Tensor, y: Tensor, xq: Tensor) -> Tensor:
        """``[B, N + M, d + 1]``: e_i = (x_i, y_i) for the context, (x_q, 0) for the ``M`` queries ``xq [B, M, d]``."""
        context = torch.cat([X, y.unsqueeze(-1)], dim=-1)
        queries = torch.cat([xq, xq.new_zeros(*xq.shape[:-1], 1)], dim=-1)
        return torch.cat([context, queries], dim=1)

    def predict(self, X: Tensor, y: Tensor, xq: Tensor) -> Tensor:
        """Predictions for queries ``xq [B, d]`` (→ ``[B]``) or ``[B, M, d]`` (→ ``[B, M]``) from N examples."""
        single = xq.dim() == 2
        e = self.tokens(X, y, xq.unsqueeze(1) if single else xq)
        N = X.shape[1]
        for layer in self.layers:
            e = layer(e, N)
        pred = -e[:, N:, self.d]
        return pred[:, 0] if single else pred


@torch.no_grad()
def gd_construction(d: int, lr: float, n_context: int, *, n_layers: int = 1,
                    dtype: torch.dtype = torch.float64) -> LSARegressor:
    """An :class:`LSARegressor` whose weights perform ``n_layers`` GD steps of rate ``lr`` from w₀ = 0 on
    L(w) = 1/(2N) Σ (wᵀx_i − y_i)² with N = ``n_context`` (the construction in the module docstring)."""
    model = LSARegressor(d, n_layers=n_layers).to(dtype)
    D = d + 1
    select_x = torch.zeros(D, D, dtype=dtype)
    select_x[:d, :d] = torch.eye(d, dtype=dtype)
    value = torch.zeros(D, D, dtype=dtype)
    value[d, d] = -1.0                                     # W_V e_i = (0, w₀ᵀx_i − y_i) with w₀ = 0
    for layer in model.layers:
        layer.w_q.copy_(select_x[None])
        layer.w_k.copy_(select_x[None])
        layer.w_v.copy_(value[None])
        layer.proj.copy_((lr / n_context) * torch.eye(D, dtype=dtype)[None])
    return model


__all__ = ["LSARegressor", "LinearSelfAttention", "gd_construction"]
