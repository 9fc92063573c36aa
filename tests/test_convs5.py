"""ConvS5 ("Convolutional State Space Models for Long-Range Spatiotemporal Modeling", Smith et al., NeurIPS 2023,
arXiv 2310.19694). The generic mixer contract (chunk invariance, causality, ...) runs on [B, T, C, H, W] inputs in
test_mixer_contract.py; here are the mechanism's own properties:

* the parallel scan equals the frame-by-frame recurrence to 1e-10 in float64 (outputs, states and gradients);
* the spatial receptive field, read off the Jacobian: y_t at pixel p depends on u_s for EVERY s ≤ t (long memory)
  exactly within the square of radius r_B + r_C around p, and on nothing at s > t (causal in time). Because the
  state kernel A of ConvS5 is pointwise (1 × 1, what makes the parallel scan possible), one layer's reach does not
  grow with t; it grows with depth (two stacked layers reach 2 (r_B + r_C)). A per-pixel stub (1 × 1 kernels)
  fails the support test;
* with 1 × 1 kernels ConvS5 is an S5 SSM applied independently at every pixel (checked against a per-pixel S5
  written out here);
* with circular padding, shifting the frames shifts the outputs (translation equivariance);
* the HiPPO-N initialisation, the ZOH discretisation, the step sizes and the optimiser settings of the SSM
  parameters.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import SeqzooError
from seqzoo.core import get_optim, state_numel
from seqzoo.mixers.ssm.hippo import legs, low_rank_correction

F64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def build(d_model=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("d_state", 8)
    return seqzoo.build_mixer("convs5", d_model, **kwargs).double().eval()


# -- parallel scan == recurrence ---------------------------------------------------------------------------------------
def test_parallel_equals_recurrent_float64_with_state_and_gradients():
    ref = build(d_model=3, d_state=6, impl="recurrent", dt_min=0.01, dt_max=0.5)
    par = build(d_model=3, d_state=6, impl="parallel", dt_min=0.01, dt_max=0.5)
    par.load_state_dict(ref.state_dict())
    x = rand(2, 37, 3, 7, 5, seed=1)                  # T not a power of two, non-square frames
    x0 = {"x": rand(2, 3, 7, 5, 2, seed=2)}            # a non-zero initial state
    weight = rand(2, 37, 3, 7, 5, seed=3)
    out = {}
    for name, mixer in (("recurrent", ref), ("parallel", par)):
        xg = x.clone().requires_grad_(True)
        y, state = mixer(xg, x0)
        (y * weight).sum().backward()
        out[name] = (y, state["x"], xg.grad, {n: p.grad for n, p in mixer.named_parameters()})
    y_r, s_r, g_r, p_r = out["recurrent"]
    y_p, s_p, g_p, p_p = out["parallel"]
    assert rel(y_p, y_r) <= 1e-10 and rel(s_p, s_r) <= 1e-10 and rel(g_p, g_r) <= 1e-10
    for name, grad in p_r.items():
        assert rel(p_p[name], grad) <= 1e-10, name
    assert p_r["log_dt"].abs().max() > 0 and p_r["Lambda_im"].abs().max() > 0   # the SSM parameters learn


# -- receptive field (Jacobian support) --------------------------------------------------------------------------------
def jacobian_support(mixers, T=4, size=13, channels=2, t_out=None):
    """Boolean support ``[T, H, W]`` of d y[t_out, :, c, c] / d u (c the centre pixel), through ``mixers`` in turn."""
    t_out = T - 1 if t_out is None else t_out
    x = rand(1, T, channels, size, size, seed=5).requires_grad_(True)
    h = x
    for mixer in mixers:
        h, _ = mixer(h)
    centre = size // 2
    (grad,) = torch.autograd.grad(h[0, t_out, :, centre, centre].sum(), x)
    return grad[0].abs().amax(dim=1) > 1e-14            # over input channels: [T, H, W]


def square(T, size, radius, t_max):
    """The expected support: every s ≤ t_max, pixels within ``radius`` (Chebyshev) of the centre."""
    c = size // 2
    idx = torch.arange(size)
    near = ((idx[:, None] - c).abs() <= radius) & ((idx[None, :] - c).abs() <= radius)
    return (torch.arange(T)[:, None, None] <= t_max) & near[None]


@pytest.mark.parametrize("kernels,radius", [((3, 3, 3), 2), ((5, 3, 1), 3), ((1, 1, 1), 0)])
def test_receptive_field_is_the_B_plus_C_window_for_every_past_frame(kernels, radius):
    b, c, d = kernels
    mixer = build(d_model=2, d_state=4, b_kernel=b, c_kernel=c, d_kernel=d)
    for t_out in (0, 3):
        support = jacobian_support([mixer], T=5, t_out=t_out)
        assert torch.equal(support, square(5, 13, radius, t_out)), f"t={t_out}"
    # the reach of one layer does not grow with time (A is pointwise), unlike a ConvSSM with a k×k state kernel


def test_receptive_field_grows_with_depth():
    one = build(d_model=2, d_state=4, seed=0)
    two = build(d_model=2, d_state=4, seed=1)
    support = jacobian_support([one, two], T=3)
    assert torch.equal(support, square(3, 13, 4, 2))


def test_future_frames_do_not_change_the_past():
    mixer = build(d_model=3)
    x = rand(2, 11, 3, 6, 6, seed=6)
    y, _ = mixer(x)
    x2 = x.clone()
    x2[:, 7:] += rand(2, 4, 3, 6, 6, seed=7)
    y2, _ = mixer(x2)
    assert torch.equal(y2[:, :7], y[:, :7]) and rel(y2[:, 7:], y[:, 7:]) > 1e-3


# -- equivalences ------------------------------------------------------------------------------------------------------
def per_pixel_s5(mixer, x):
    """S5 on every pixel separately, from the raw parameters:
    x_t = Λ̄ x_{t−1} + B̄ u_t, y_t = GELU(2 Re(C̃ x_t) + D u_t)."""
    lam = torch.complex(mixer.Lambda_re.clamp(max=-1e-4), mixer.Lambda_im)
    dt = torch.exp(mixer.log_dt)
    lam_bar = torch.exp(lam * dt)
    B = torch.view_as_complex(mixer.B.contiguous())[:, :, 0, 0]           # [P, C] (1×1 kernels)
    B_bar = ((lam_bar - 1) / lam)[:, None] * B
    C = torch.view_as_complex(mixer.C.contiguous())[:, :, 0, 0]           # [C, P]
    D, bias = mixer.D.weight[:, :, 0, 0], mixer.D.bias
    batch, T, channels, H, W = x.shape
    u = x.permute(0, 3, 4, 1, 2).reshape(-1, T, channels)                  # one sequence per pixel
    state = torch.zeros(u.shape[0], lam.shape[0], dtype=torch.complex128)
    ys = []
    for t in range(T):
        state = lam_bar * state + u[:, t].to(torch.complex128) @ B_bar.T
        ys.append(F.gelu(2 * (state @ C.T).real + u[:, t] @ D.T + bias))
    return torch.stack(ys, 1).reshape(batch, H, W, T, channels).permute(0, 3, 4, 1, 2)


def test_one_by_one_kernels_equal_per_pixel_s5():
    mixer = build(d_model=3, d_state=8, b_kernel=1, c_kernel=1, d_kernel=1, dt_min=0.05, dt_max=0.5)
    x = rand(2, 9, 3, 4, 5, seed=8)
    with torch.no_grad():
        y, _ = mixer(x)
        assert rel(y, per_pixel_s5(mixer, x)) <= 1e-12


def test_token_inputs_are_one_by_one_frames():
    mixer = build(d_model=3)
    x = rand(2, 7, 3, seed=9)
    y, state = mixer(x)
    y_video, state_video = mixer(x[..., None, None])
    assert y.shape == x.shape and torch.equal(y, y_video[..., 0, 0]) and torch.equal(state["x"], state_video["x"])


def test_circular_padding_is_translation_equivariant():
    mixer = build(d_model=2, padding="circular")
    x = rand(1, 6, 2, 8, 7, seed=10)
    with torch.no_grad():
        y, _ = mixer(x)
        y_shift, _ = mixer(torch.roll(x, shifts=(2, -3), dims=(3, 4)))
    assert rel(y_shift, torch.roll(y, shifts=(2, -3), dims=(3, 4))) <= 1e-12
    zero = build(d_model=2, padding="zeros")
    with torch.no_grad():
        y0, _ = zero(x)
        y0_shift, _ = zero(torch.roll(x, shifts=(2, -3), dims=(3, 4)))
    assert rel(y0_shift, torch.roll(y0, shifts=(2, -3), dims=(3, 4))) > 1e-3   # zero padding sees the border


# -- parameterisation -------------------------------------------------------------------------------------------------
def test_hippo_initialisation_and_zoh():
    mixer = build(d_model=4, d_state=16)
    A, _ = legs(16)
    P = low_rank_correction("legs", 16)
    eig = torch.linalg.eigvals(A + P.T @ P)                                 # the normal part of HiPPO-LegS
    lam = torch.complex(mixer.Lambda_re, mixer.Lambda_im)
    assert lam.shape == (8,) and (mixer.Lambda_im > 0).all()                # one of each conjugate pair
    assert torch.allclose(mixer.Lambda_re, torch.full((8,), -0.5, dtype=F64))
    for value in lam:                                                       # (parameters stored in float32)
        assert (eig - value).abs().min() < 1e-6 * value.abs()
    dt = torch.exp(mixer.log_dt)
    assert ((dt >= 1e-3 - 1e-15) & (dt <= 1e-1 + 1e-15)).all()
    lam_bar, B_bar = mixer.discrete(F64)
    assert torch.allclose(lam_bar, torch.exp(lam * dt), rtol=0, atol=1e-14) and (lam_bar.abs() < 1).all()
    # ZOH of a constant input: x_∞ = (1 − Λ̄)⁻¹ B̄ u = −Λ⁻¹ B̃ u, the continuous-time steady state
    B = torch.view_as_complex(mixer.B.contiguous())
    assert torch.allclose(B_bar / (1 - lam_bar)[:, None, None, None], -B / lam[:, None, None, None], atol=1e-10)


def test_clip_eigs_keeps_the_real_parts_negative():
    mixer = build(d_model=2)
    with torch.no_grad():
        mixer.Lambda_re.fill_(0.3)
    lam_bar, _ = mixer.discrete(F64)
    assert (lam_bar.abs() < 1).all()
    assert torch.allclose(lam_bar.abs(), torch.exp(torch.exp(mixer.log_dt) * -1e-4))


def test_ssm_parameters_have_no_weight_decay_and_their_own_lr():
    mixer = seqzoo.build_mixer("convs5", 8, ssm_lr=2e-3)
    for name in ("Lambda_re", "Lambda_im", "log_dt", "B"):
        assert get_optim(getattr(mixer, name)) == {"weight_decay": 0.0, "lr": 2e-3}, name
    assert get_optim(mixer.C) == {} and get_optim(mixer.D.weight) == {}


# -- state and errors --------------------------------------------------------------------------------------------------
def test_state_is_one_frame_of_P_channels_whatever_the_length():
    mixer = seqzoo.build_mixer("convs5", 8, d_state=6, frame_size=(5, 4))
    assert mixer.example_input_shape(2, 9) == (2, 9, 8, 5, 4)
    with torch.no_grad():
        sizes = {T: state_numel(mixer(torch.randn(mixer.example_input_shape(1, T)))[1]) for T in (1, 16, 300)}
    assert set(sizes.values()) == {3 * 5 * 4 * 2} and mixer.state_size(300) == 3 * 5 * 4 * 2


def test_bad_inputs_are_one_line_errors():
    mixer = build(d_model=3)
    with pytest.raises(SeqzooError, match=r"convs5 expects videos \[B, T, 3, H, W\]"):
        mixer(rand(1, 2, 4, 5, 5))
    with pytest.raises(SeqzooError, match=r"convs5 state 'x' must have shape \[1, 4, 5, 5, 2\] for frames 5×5"):
        mixer(rand(1, 2, 3, 5, 5), {"x": torch.zeros(1, 4, 6, 6, 2, dtype=F64)})
    with pytest.raises(SeqzooError, match="d_state must be an even int"):
        seqzoo.build_mixer("convs5", 4, d_state=5)
    with pytest.raises(SeqzooError, match="b_kernel must be a positive odd int"):
        seqzoo.build_mixer("convs5", 4, b_kernel=2)
    with pytest.raises(SeqzooError, match="padding 'reflect' is not valid for convs5; valid: zeros, circular"):
        seqzoo.build_mixer("convs5", 4, padding="reflect")
    with torch.no_grad():
        assert math.isfinite(float(mixer(rand(1, 1, 3, 5, 5))[0].sum()))
