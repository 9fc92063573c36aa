"""LSSL (seqzoo/mixers/ssm/lssl.py): the recurrent, convolutional and continuous-time views of one SSM.

Verification (reference notes, LSSL §17): recurrent == convolutional in float64 (1e-10), with a carried state;
the bilinear Ā matches expm(ΔA) to O(Δ³); as Δ → 0 with rescaled steps the discrete solution approaches the ODE
solution (matrix exponential), and the discrete kernel approaches Δ·k(t) where k(t) = C e^{tA} B is the
continuous view, itself checked against an independent ODE integration.
"""

import math

import pytest
import torch

import seqzoo
from seqzoo.core import get_optim
from seqzoo.mixers.ssm import discretize, hippo


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def single_channel(N=8, dt=0.1, **options) -> "seqzoo.Mixer":
    torch.manual_seed(0)
    mixer = seqzoo.build_mixer("lssl", 1, d_state=N, **options).double()
    with torch.no_grad():
        mixer.log_dt.fill_(math.log(dt))
    return mixer


@pytest.mark.parametrize("options", [{}, {"copies": 3, "train_A": True}, {"measure": "legt"}])
def test_recurrent_equals_convolution_float64(options):
    torch.manual_seed(0)
    step = seqzoo.build_mixer("lssl", 6, d_state=12, impl="recurrent", dt_min=0.01, dt_max=0.3, **options).double()
    conv = seqzoo.build_mixer("lssl", 6, d_state=12, impl="conv", **options).double()
    conv.load_state_dict(step.state_dict())
    x = torch.randn(2, 130, 6, dtype=torch.float64)
    with torch.no_grad():
        y_step, s_step = step(x[:, :50])
        y_conv, s_conv = conv(x[:, :50])
        y2_step, s2_step = step(x[:, 50:], s_step)
        y2_conv, s2_conv = conv(x[:, 50:], s_step)
    assert rel(y_conv, y_step) < 1e-10 and rel(s_conv["x"], s_step["x"]) < 1e-10
    assert rel(y2_conv, y2_step) < 1e-10 and rel(s2_conv["x"], s2_step["x"]) < 1e-10


def test_bilinear_matches_the_matrix_exponential_to_third_order():
    A, B = hippo.legs(8)
    errors = []
    for dt in (0.004, 0.002, 0.001):
        dA, _ = discretize.bilinear(A, B, torch.tensor(dt, dtype=torch.float64))
        errors.append((dA - torch.linalg.matrix_exp(dt * A)).abs().max().item())
    for big, small in zip(errors, errors[1:]):
        assert 7.0 < big / small < 9.0          # local error O(Δ³)


def test_continuous_kernel_is_the_impulse_response():
    mixer = single_channel(N=6)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    k = mixer.continuous_kernel(t)
    assert k.shape == (1, 3)
    # independent: integrate x' = A x, x(0) = B with RK4 and read C x(t)
    A, B, C = mixer.A, mixer.B, mixer.C[0]
    x, h, out, now = B.clone(), 1e-3, [], 0.0
    for target in t.tolist():
        while now < target - 1e-12:
            k1 = A @ x
            k2 = A @ (x + h / 2 * k1)
            k3 = A @ (x + h / 2 * k2)
            k4 = A @ (x + h * k3)
            x, now = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), now + h
        out.append(C @ x)
    assert rel(k[0], torch.stack(out)) < 1e-9


def test_discrete_kernel_approaches_the_continuous_kernel():
    """K_l / Δ → k((l + ½) Δ) with an O(Δ²) error (B̄ = (I − Δ/2 A)⁻¹ Δ B ≈ e^{ΔA/2} Δ B: each step is centred)."""
    t_end, errors = 1.0, []
    for dt in (0.02, 0.01, 0.005):
        mixer = single_channel(N=8, dt=dt)
        steps = round(t_end / dt)
        K = mixer.conv_kernel(steps + 1)[0]
        times = (torch.arange(steps + 1, dtype=torch.float64) + 0.5) * dt
        errors.append(rel(K / dt, mixer.continuous_kernel(times)[0]))
    assert errors[-1] < 3e-3
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5


def test_discrete_solution_approaches_the_ode_solution():
    """u(t) = sin(2t) on [0, 2]: the exact x(T) comes from the matrix exponential of the system augmented with
    the oscillator that generates u; the recurrence with Δ = T/n converges to it as n grows."""
    N, T, w = 8, 2.0, 2.0
    A, B = hippo.legs(N)
    M = torch.zeros(N + 2, N + 2, dtype=torch.float64)
    M[:N, :N], M[:N, N] = A, B
    M[N, N + 1], M[N + 1, N] = w, -w
    z0 = torch.zeros(N + 2, dtype=torch.float64)
    z0[N + 1] = 1.0                                               # (sin, cos)(0) = (0, 1)
    exact = (torch.linalg.matrix_exp(T * M) @ z0)[:N]
    errors = []
    for n in (100, 200, 400):
        dt = T / n
        mixer = single_channel(N=N, dt=dt, impl="conv")
        # the bilinear rule is the trapezoid rule when fed the average of the input at both ends of each step
        times = torch.arange(1, n + 1, dtype=torch.float64) * dt
        u = ((torch.sin(w * times) + torch.sin(w * (times - dt))) / 2)[None, :, None]
        with torch.no_grad():
            _, x_T = mixer.run_ssm(u, torch.zeros(1, 1, N, dtype=torch.float64), "conv")
            _, x_rec = mixer.run_ssm(u, torch.zeros(1, 1, N, dtype=torch.float64), "recurrent")
        assert rel(x_T, x_rec) < 1e-10
        errors.append(rel(x_T[0, 0], exact))
    assert errors[-1] < 1e-4
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5   # second order


def test_options():
    mixer = seqzoo.build_mixer("lssl", 8, copies=2)
    assert mixer.channels == 16 and mixer.state_size(5) == 16 * 32
    assert "A" in dict(mixer.named_buffers()) and get_optim(mixer.log_dt)["weight_decay"] == 0.0
    trainable = seqzoo.build_mixer("lssl", 8, train_A=True)
    assert get_optim(trainable.A) == {"weight_decay": 0.0, "lr": 1e-3}
    y, state = mixer(torch.randn(2, 5, 8))
    assert y.shape == (2, 5, 8) and state["x"].shape == (2, 16, 32)
