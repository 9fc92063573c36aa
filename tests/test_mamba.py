"""Mechanism tests of the Mamba block (arXiv 2312.00752) beyond the mixer contract.

* selectivity: a token whose content drives Δ large resets the state (the state after it no longer depends on what
  came before, it is ≈ Δ u B of that token), and a token whose content drives Δ ≈ 0 is skipped (the state passes
  through unchanged and the later outputs are those of the sequence without it); a time-invariant stub (fixed Δ,
  B, C) can do neither;
* the S6 core against a loop written here (independent of seqzoo.ops);
* the paper's initial values (S4D-Real A, log-uniform Δ in [1e-3, 1e-1] through an inverse softplus, D = 1) and the
  optimiser declarations (no weight decay on A_log, D, Δ bias; own lr through ``ssm_lr``);
* token-by-token decoding equals the full forward (outputs, conv state = last inputs of the x branch, ssm state);
* bf16 inputs keep both state tensors in float32; bad options are one-line errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import SeqzooError
from seqzoo.core import get_optim
from seqzoo.mixers.ssm.mamba import Mamba, SelectiveSSM, inverse_softplus
from seqzoo.train.optim import param_groups

F64 = torch.float64
D = 64


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def explicit_s6(ssm: SelectiveSSM, u: torch.Tensor, h: torch.Tensor | None = None):
    """The S6 recurrence written out channel-wise with the module's weights: returns (y, h_final, [h_t])."""
    batch, length, channels = u.shape
    n = ssm.d_state
    w_x, w_dt, b_dt = ssm.x_proj.weight, ssm.dt_proj.weight, ssm.dt_proj.bias
    A = -torch.exp(ssm.A_log)
    h = torch.zeros(batch, channels, n, dtype=u.dtype) if h is None else h.clone()
    ys, hs = [], []
    for t in range(length):
        proj = u[:, t] @ w_x.T
        low, B, C = proj[:, :ssm.dt_rank], proj[:, ssm.dt_rank:ssm.dt_rank + n], proj[:, ssm.dt_rank + n:]
        delta = torch.log1p(torch.exp(low @ w_dt.T + b_dt))                       # softplus, [batch, channels]
        h = torch.exp(delta[:, :, None] * A) * h + (delta * u[:, t])[:, :, None] * B[:, None, :]
        ys.append((h * C[:, None, :]).sum(-1) + ssm.D * u[:, t])
        hs.append(h)
    return torch.stack(ys, 1), h, hs


def gated_ssm(channels=6, d_state=4, seed=0, impl="recurrent"):
    """An S6 core whose Δ is chosen by input channel 0: Δ = softplus(40·u_0 − 12) — ≈ 0.69 when u_0 = 0.3,
    ≈ 28 when u_0 = 1 (exp(Δ A) ≤ exp(−28) ≈ 7e-13 as A ≤ −1), ≈ 2.6e-23 when u_0 = −1."""
    torch.manual_seed(seed)
    ssm = SelectiveSSM(channels, d_state, dt_rank=1, impl=impl).double()
    with torch.no_grad():
        ssm.x_proj.weight[0].zero_()
        ssm.x_proj.weight[0, 0] = 1.0            # δ_t = u_t[0]
        ssm.dt_proj.weight.fill_(40.0)
        ssm.dt_proj.bias.fill_(-12.0)
    return ssm


def tokens(length, seed, gate_at=None, gate_value=0.0):
    """Random tokens with the gate channel at 0.3 (Δ = softplus(0) ≈ 0.69: the state carries a sizeable history)
    except ``gate_value`` at token ``gate_at``."""
    u = rand(2, length, 6, seed=seed)
    u[..., 0] = 0.3
    if gate_at is not None:
        u[:, gate_at, 0] = gate_value
    return u


# -- the S6 core -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["recurrent", "chunk", "parallel"])
def test_s6_core_matches_explicit_loop(impl):
    torch.manual_seed(3)
    ssm = SelectiveSSM(6, 4, dt_rank=2, impl=impl, chunk_size=4).double()
    with torch.no_grad():
        ssm.D.copy_(rand(6, seed=4))
    u, h0 = rand(2, 11, 6, seed=5), rand(2, 6, 4, seed=6)
    y, h = ssm(u, h0)
    y_ref, h_ref, _ = explicit_s6(ssm, u, h0)
    assert rel_err(y, y_ref) < 1e-12 and rel_err(h, h_ref) < 1e-12


@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_large_delta_token_resets_the_state(impl):
    ssm = gated_ssm(impl=impl)
    t = 9
    a, b = tokens(14, seed=1, gate_at=t, gate_value=1.0), tokens(14, seed=2, gate_at=t, gate_value=1.0)
    b[:, t:] = a[:, t:]                           # different histories, same token t and same continuation
    with torch.no_grad():
        (y_a, h_a), (y_b, h_b) = ssm(a), ssm(b)
        _, state_a = ssm(a[:, :t + 1])
        _, state_b = ssm(b[:, :t + 1])
        delta, B, _ = ssm.selection(a[:, t:t + 1])
        _, before_a = ssm(a[:, :t])
        _, before_b = ssm(b[:, :t])
    assert rel_err(before_b, before_a) > 0.1      # the histories differ ...
    # ... but after the selected token the state is Δ_t u_t B_t, whatever came before
    expected = (delta[:, 0] * a[:, t])[:, :, None] * B[:, 0, None, :]
    assert rel_err(state_a, expected) < 1e-9 and rel_err(state_b, expected) < 1e-9
    assert rel_err(y_b[:, t:], y_a[:, t:]) < 1e-9 and rel_err(h_b, h_a) < 1e-9


@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_small_delta_token_is_ignored(impl):
    ssm = gated_ssm(impl=impl)
    t = 6
    u = tokens(12, seed=3, gate_at=t, gate_value=-1.0)     # Δ_t = softplus(−52) ≈ 2.6e-23
    u[:, t, 1:] *= 50.0                                      # a loud token that would dominate a fixed-step state
    with torch.no_grad():
        _, before = ssm(u[:, :t])
        _, after = ssm(u[:, :t + 1])
        y_skip, h_skip = ssm(torch.cat([u[:, :t], u[:, t + 1:]], dim=1))
        y, h = ssm(u)
    assert rel_err(after, before) < 1e-12                   # the state passed through the token unchanged
    keep = [i for i in range(12) if i != t]
    assert rel_err(y[:, keep], y_skip) < 1e-12 and rel_err(h, h_skip) < 1e-12


def test_reset_check_detects_a_step_that_ignores_the_token():
    """With Δ cut off from the input (δ ≡ 0, so Δ = softplus(b_Δ) for every token) the same token no longer
    resets the state: the history still shows after it. This is the failure an LTI stub would have."""
    ssm = gated_ssm()
    with torch.no_grad():
        ssm.x_proj.weight[0].zero_()
        ssm.dt_proj.bias.fill_(0.0)
    t = 9
    a, b = tokens(14, seed=1, gate_at=t, gate_value=1.0), tokens(14, seed=2, gate_at=t, gate_value=1.0)
    b[:, t:] = a[:, t:]
    with torch.no_grad():
        _, state_a = ssm(a[:, :t + 1])
        _, state_b = ssm(b[:, :t + 1])
    assert rel_err(state_b, state_a) > 1e-2


# -- initial values and optimiser declarations -------------------------------------------------------------------
def test_initial_values_follow_the_paper():
    torch.manual_seed(0)
    m = Mamba(D)
    E, N = 2 * D, 16
    assert m.d_inner == E and m.dt_rank == math.ceil(D / 16) == 4 and m.d_state == N and m.d_conv == 4
    assert m.in_proj.weight.shape == (2 * E, D) and m.in_proj.bias is None
    assert m.ssm.x_proj.weight.shape == (4 + 2 * N, E) and m.ssm.x_proj.bias is None
    assert m.out_proj.weight.shape == (D, E) and m.conv.weight.shape == (E, 4)
    A = m.ssm.A()
    assert torch.allclose(A, -torch.arange(1, N + 1, dtype=torch.float32).expand(E, N))   # S4D-Real
    assert torch.equal(m.ssm.D.detach(), torch.ones(E))
    assert m.ssm.dt_proj.weight.abs().max() <= 4 ** -0.5
    dt = F.softplus(m.ssm.dt_proj.bias.detach().double())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    # log-uniform: log dt spread evenly over [log 1e-3, log 1e-1] (128 draws: loose quartile bounds)
    q = torch.quantile((dt.log() - math.log(1e-3)) / (math.log(1e-1) - math.log(1e-3)),
                       torch.tensor([0.25, 0.5, 0.75], dtype=F64))
    assert (q - torch.tensor([0.25, 0.5, 0.75], dtype=F64)).abs().max() < 0.12, q
    y = torch.tensor([1e-4, 1e-3, 0.05, 3.0, 30.0], dtype=F64)
    assert torch.allclose(F.softplus(inverse_softplus(y)), y, rtol=1e-12)


def test_ssm_parameters_get_no_weight_decay_and_optional_own_lr():
    m = Mamba(D, ssm_lr=1e-4)
    special = {id(p) for p in (m.ssm.A_log, m.ssm.D, m.ssm.dt_proj.bias)}
    for p in (m.ssm.A_log, m.ssm.D, m.ssm.dt_proj.bias):
        assert get_optim(p) == {"weight_decay": 0.0, "lr": 1e-4}
    groups = param_groups(m, lr=1e-3, weight_decay=0.1)
    own = [g for g in groups if any(id(p) in special for p in g["params"])]
    assert len(own) == 1 and own[0]["weight_decay"] == 0.0 and own[0]["lr"] == 1e-4
    assert {id(p) for p in own[0]["params"]} == special
    plain = Mamba(D)
    assert get_optim(plain.ssm.A_log) == {"weight_decay": 0.0}      # no own lr unless asked
    assert get_optim(plain.in_proj.weight) == {}


# -- decoding and state --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["recurrent", "chunk"])
def test_token_by_token_decoding_equals_full_forward(impl):
    torch.manual_seed(0)
    m = Mamba(D, impl=impl, chunk_size=8).double().eval()
    x = rand(2, 19, D, seed=11)
    with torch.no_grad():
        y_full, s_full = m(x)
        state, ys = m.init_state(2, dtype=F64), []
        for t in range(19):
            y_t, state = m(x[:, t:t + 1], state)
            ys.append(y_t)
        u_pre = m.in_proj(x)[..., :m.d_inner]
    assert rel_err(torch.cat(ys, 1), y_full) < 1e-12
    assert rel_err(state["ssm"], s_full["ssm"]) < 1e-12
    assert torch.allclose(state["conv"], s_full["conv"], rtol=0, atol=1e-13)
    assert torch.allclose(state["conv"], u_pre[:, -3:], rtol=0, atol=1e-13)   # the last d_conv − 1 x-branch inputs


def test_block_output_matches_explicit_computation():
    torch.manual_seed(2)
    m = Mamba(D, d_state=4, expand=1).double().eval()
    x = rand(1, 9, D, seed=12)
    u, z = (x @ m.in_proj.weight.T).chunk(2, dim=-1)
    padded = torch.cat([torch.zeros(1, 3, D, dtype=F64), u], dim=1)
    conv = torch.stack([(padded[:, t:t + 4] * m.conv.weight.T).sum(1) for t in range(9)], 1) + m.conv.bias
    y_ssm, _, _ = explicit_s6(m.ssm, F.silu(conv))
    expected = (y_ssm * F.silu(z)) @ m.out_proj.weight.T
    with torch.no_grad():
        y, _ = m(x)
    assert rel_err(y, expected) < 1e-12


def test_bf16_inputs_keep_float32_states():
    torch.manual_seed(0)
    m = Mamba(D).to(torch.bfloat16)
    x = torch.randn(2, 7, D).to(torch.bfloat16)
    with torch.no_grad():
        y, state = m(x[:, :4])
        y2, state = m(x[:, 4:], state)
    assert y.dtype == y2.dtype == torch.bfloat16
    assert state["ssm"].dtype == torch.float32 and state["conv"].dtype == torch.float32
    m32 = Mamba(D).float()
    m32.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    with torch.no_grad():
        y32, s32 = m32(x.float())
    assert rel_err(state["ssm"], s32["ssm"]) < 3e-2                  # bf16 weights/activations, fp32 recurrence


def test_bad_options_are_one_line_errors():
    for kwargs, match in (({"d_state": 0}, "d_state"), ({"expand": 1.5}, "expand"), ({"dt_rank": -1}, "dt_rank"),
                          ({"impl": "cuda"}, "valid: auto, recurrent, chunk, parallel"),
                          ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min"), ({"ssm_lr": -1.0}, "ssm_lr")):
        with pytest.raises(SeqzooError, match=match):
            seqzoo.build_mixer("mamba", D, **kwargs)
    m = seqzoo.build_mixer("mamba", D)
    with pytest.raises(SeqzooError, match="lacks 'ssm'"):
        m(torch.randn(1, 2, D), {"conv": torch.zeros(1, 3, 2 * D)})


# -- reproduction ---------------------------------------------------------------------------------------------------
def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro
    from seqzoo.repro.mamba import matched_width, model_config, parameter_count

    entry = get_repro("mamba")
    assert entry.arxiv == "2312.00752"
    result = entry.run(True)
    assert result.paper_id == "mamba" and result.checks
    names = [c.name for c in result.checks]
    assert any(n.startswith("mamba accuracy") for n in names)
    assert any("mamba@lr=" in key for key in result.details)
    if "s4d" in seqzoo.list_mixers():   # equal budgets: the S4D arm is matched in parameters
        assert any(n.startswith("parameter counts") for n in names)
        target = parameter_count(model_config("mamba", 32))
        width = matched_width("s4d", target)
        assert abs(parameter_count(model_config("s4d", width)) / target - 1) <= 0.10
