"""Property tests of the SpaceTime companion SSM (seqzoo/mixers/ssm/spacetime.py).

The contract (chunk invariance, causality, impls and gradients agree) is in tests/test_mixer_contract.py. Here:
the generating-function kernels against explicit powers; the companion structure (the kernel is an AR(N)
recursion in ``a``; with ``a`` = AR coefficients the layer *is* the AR process and its one-step predictions are
exact; least squares recovers AR(3) coefficients from noise-free data) — properties a diagonal-A SSM of the same
order does not have; the closed-loop forecaster; and the reproduction's quick mode.
"""

import pytest
import torch

import seqzoo
from seqzoo.core import get_optim
from seqzoo.core.errors import SeqzooError
from seqzoo.mixers.ssm.spacetime import (companion_kernel, companion_matrix, krylov_explicit,
                                         last_component_free)

PHI = torch.tensor([0.6, -0.3, 0.2], dtype=torch.float64)  # a stationary AR(3)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def l1(a):
    return a / a.abs().sum(-1, keepdim=True)


def ar_series(phi, n, length, seed, noise=None):
    """x_t = Σ φ_i x_{t−i} (+ noise_t); the first p values random, zeros before the start."""
    p = len(phi)
    x = torch.zeros(n, length, dtype=torch.float64)
    x[:, :p] = rand(n, p, seed=seed)
    for t in range(p, length):
        x[:, t] = sum(phi[i] * x[:, t - 1 - i] for i in range(p)) + (0 if noise is None else noise[:, t])
    return x


def ar_impulse_response(phi, length):
    h = torch.zeros(length, dtype=torch.float64)
    h[0] = 1.0
    for j in range(1, length):
        h[j] = sum(phi[m] * h[j - 1 - m] for m in range(min(len(phi), j)))
    return h


def set_params(mixer, a=None, b=None, c=None, k=None, skip=None):
    with torch.no_grad():
        for name, value in (("a", a), ("b", b), ("c", c), ("k", k)):
            if value is not None:
                getattr(mixer, name).copy_(value)
        if skip is not None:
            mixer.skip.fill_(skip)


# -- kernels ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,length", [(6, 1), (6, 4), (6, 6), (6, 7), (5, 50)])
def test_generating_function_kernels_equal_explicit_powers(n, length):
    a, b, c = l1(rand(3, n, seed=1)), rand(3, n, seed=2), rand(3, n, seed=3)
    cols = krylov_explicit(a, b, length)                                    # A^j b
    dense = companion_matrix(a)
    for j in range(min(length, 4)):
        torch.testing.assert_close(cols[..., j], (torch.linalg.matrix_power(dense, j) @ b[..., None])[..., 0])
    kernel = torch.einsum("dn,dnj->dj", c, cols)
    torch.testing.assert_close(companion_kernel(a, b, c, length), kernel, rtol=1e-11, atol=1e-12)
    v = rand(2, 3, n, seed=4)                                                # a batch of start states
    free = torch.stack([krylov_explicit(a, v[i], length)[..., -1, :] for i in range(2)])  # e_{N−1}ᵀ A^j v
    torch.testing.assert_close(last_component_free(a, v, length), free, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("case", ["pole_at_one", "cyclic_shift"])
def test_kernel_with_poles_on_the_unit_circle(case):
    """ℓ1-normalised non-negative ``a`` has a pole exactly at 1; ``a = e_0`` makes A a cyclic shift (all poles on
    the unit circle, at roots of unity that coincide with the FFT points when N divides T)."""
    if case == "pole_at_one":
        a = rand(2, 6, seed=4).abs()
        a = a / a.sum(-1, keepdim=True)
    else:
        a = torch.zeros(2, 6, dtype=torch.float64)
        a[:, 0] = 1.0
    b, c = rand(2, 6, seed=5), rand(2, 6, seed=6)
    expected = torch.einsum("dn,dnj->dj", c, krylov_explicit(a, b, 24))
    torch.testing.assert_close(companion_kernel(a, b, c, 24), expected, rtol=1e-10, atol=1e-11)


def test_mixer_kernel_obeys_the_ar_recursion_of_its_last_column():
    """Cayley–Hamilton: ``K_{j+N} = Σ_i a_i K_{j+i}`` — the kernel is an AR(N) filter with coefficients ``a``
    (a diagonal A with the same numbers on its diagonal would not satisfy this)."""
    mixer = seqzoo.build_mixer("spacetime", 4, d_state=5).double()
    kernel = mixer.kernel(40)
    a = mixer.last_column()
    torch.testing.assert_close(a.abs().sum(-1), torch.ones(4, dtype=torch.float64))  # "l1": |a|_1 = 1
    for j in range(40 - 5):
        torch.testing.assert_close(kernel[:, j + 5], (a * kernel[:, j:j + 5]).sum(-1), rtol=1e-9, atol=1e-11)


# -- AR(p) expressivity ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5])
def test_last_column_as_ar_coefficients_makes_the_layer_the_ar_process(n):
    """a = (0, …, φ_3, φ_2, φ_1), b = e_0, c = first N values of the AR impulse response: the kernel is the AR
    impulse response, driving the layer with the innovations produces the AR series, and the noise-free one-step
    prediction cᵀ A s_t is exactly Σ φ_i x_{t+1−i}."""
    mixer = seqzoo.build_mixer("spacetime", 1, d_state=n, a_norm="none", skip=False).double()
    h = ar_impulse_response(PHI, 200)
    a = torch.zeros(1, n, dtype=torch.float64)
    a[0, n - 3:] = PHI.flip(0)
    set_params(mixer, a=a, b=torch.eye(n, dtype=torch.float64)[:1], c=h[:n][None])
    torch.testing.assert_close(mixer.kernel(200)[0], h, rtol=1e-9, atol=1e-11)

    noise = rand(2, 60, seed=7)
    x = torch.zeros(2, 60, dtype=torch.float64)  # the AR(3) series driven by the noise, from rest
    for t in range(60):
        x[:, t] = noise[:, t] + sum(PHI[i] * x[:, t - 1 - i] for i in range(3) if t - 1 - i >= 0)
    for impl in ("fft", "recurrent"):
        mixer.impl = impl
        y, _ = mixer(noise[..., None])
        torch.testing.assert_close(y[..., 0], x, rtol=1e-10, atol=1e-10)
    states, state = [], None
    for t in range(59):
        _, state = mixer(noise[:, t:t + 1, None], state)
        states.append(state["s"][:, 0])
    s = torch.stack(states, 1)                                                  # s_t, t = 0 … 58
    a_dense = companion_matrix(mixer.last_column())[0]
    one_step = s @ a_dense.T @ mixer.c.detach()[0]                              # cᵀ A s_t
    expected = sum(PHI[i] * torch.nn.functional.pad(x, (i, 0))[:, :59] for i in range(3))
    torch.testing.assert_close(one_step, expected, rtol=1e-10, atol=1e-10)


def test_least_squares_recovers_ar3_from_noise_free_data():
    """Train a one-channel layer (N = 4) as a one-step predictor on noise-free AR(3) series (predictions of
    x_3 … counted): the fit is exact and the effective predictor taps (K_0 + skip, K_1, K_2) are φ, the tail 0."""
    x = ar_series(PHI, 16, 40, seed=8)
    torch.manual_seed(0)
    mixer = seqzoo.build_mixer("spacetime", 1, d_state=4, a_norm="clip").double()
    with torch.no_grad():  # a stable start: |a|_1 = ½
        mixer.a.mul_(0.5 / mixer.a.abs().sum())
    opt = torch.optim.LBFGS(mixer.parameters(), lr=1, max_iter=300, history_size=50, tolerance_grad=1e-15,
                            tolerance_change=1e-18, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        y, _ = mixer(x[:, :-1, None])
        loss = ((y[:, 2:, 0] - x[:, 3:]) ** 2).mean() / x[:, 3:].pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        y, _ = mixer(x[:, :-1, None])
        rel_mse = (((y[:, 2:, 0] - x[:, 3:]) ** 2).mean() / x[:, 3:].pow(2).mean()).item()
        taps = mixer.kernel(12)[0]
        taps[0] += mixer.skip[0]
    assert rel_mse < 1e-10
    torch.testing.assert_close(taps[:3], PHI, rtol=0, atol=1e-5)
    assert taps[3:].abs().max() < 1e-5


# -- closed loop -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["fft", "recurrent"])
def test_closed_loop_forecast_continues_an_ar_process_exactly(impl):
    """State = the last N inputs (a = 0, b = e_0), k = φ predicts the next input, c = e_0 outputs it: feeding
    the predictions back (closed loop) continues a noise-free AR(3) series exactly, for 50 steps."""
    n = 5
    mixer = seqzoo.build_mixer("spacetime", 1, d_state=n, a_norm="none", skip=False, impl=impl).double()
    e0 = torch.eye(n, dtype=torch.float64)[:1]
    k = torch.zeros(1, n, dtype=torch.float64)
    k[0, :3] = PHI
    set_params(mixer, a=torch.zeros(1, n, dtype=torch.float64), b=e0, c=e0, k=k)
    series = ar_series(PHI, 3, 80, seed=9)
    forecast = mixer.forecast(series[:, :30, None], 50)
    torch.testing.assert_close(forecast[..., 0], series[:, 30:], rtol=1e-9, atol=1e-10)
    _, state = mixer(series[:, :30, None])
    y, _, _ = mixer.closed_loop(state, 50, impl=impl)
    torch.testing.assert_close(y[..., 0], series[:, 30:], rtol=1e-9, atol=1e-10)
    _, u_hat, _ = mixer.next_inputs(series[:, :30, None])  # û_t predicts x_{t+1}
    torch.testing.assert_close(u_hat[:, 2:29, 0], series[:, 3:30], rtol=1e-10, atol=1e-10)


def test_closed_loop_impls_agree_from_any_state():
    mixer = seqzoo.build_mixer("spacetime", 3, d_state=6).double()
    x = rand(2, 17, 3, seed=10)
    y_f, u_f, s_f = mixer.next_inputs(x[:, :9])
    mixer.impl = "recurrent"
    y_r, u_r, s_r = mixer.next_inputs(x[:, :9])
    torch.testing.assert_close(y_f, y_r, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(u_f, u_r, rtol=1e-10, atol=1e-11)
    y2, u2, s2 = mixer.next_inputs(x[:, 9:], s_r)  # threading the state
    y_all, u_all, _ = mixer.next_inputs(x)
    torch.testing.assert_close(torch.cat([y_r, y2], 1), y_all, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(torch.cat([u_r, u2], 1), u_all, rtol=1e-10, atol=1e-11)
    ys = [mixer.closed_loop(s2, 12, impl=impl) for impl in ("recurrent", "fft")]
    for part in range(2):
        torch.testing.assert_close(ys[0][part], ys[1][part], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(ys[0][2]["s"], ys[1][2]["s"], rtol=1e-9, atol=1e-11)
    # the closed loop is the open loop fed with its own predictions
    y_open, _, _ = mixer.next_inputs(ys[0][1], s2)
    torch.testing.assert_close(y_open, ys[0][0], rtol=1e-10, atol=1e-11)


# -- options -----------------------------------------------------------------------------------------------------------
def test_options_optimizer_marks_and_errors():
    mixer = seqzoo.build_mixer("spacetime", 8)
    assert get_optim(mixer.a) == {"weight_decay": 0.0, "lr": 1e-3} == get_optim(mixer.k)
    assert get_optim(mixer.b) == {"weight_decay": 0.0} == get_optim(mixer.c)
    assert mixer.init_state(2, dtype=torch.bfloat16)["s"].dtype == torch.float32
    assert mixer.state_size(100) == 8 * 32
    with pytest.raises(SeqzooError, match="a_norm 'l2' is not valid"):
        seqzoo.build_mixer("spacetime", 8, a_norm="l2")
    with pytest.raises(SeqzooError, match="impl 'chunk' is not valid for spacetime"):
        seqzoo.build_mixer("spacetime", 8, impl="chunk")
    with pytest.raises(SeqzooError, match="horizon must be a positive int"):
        mixer.forecast(torch.randn(1, 4, 8), 0)
    with pytest.raises(SeqzooError, match="state lacks 's'"):
        mixer(torch.randn(1, 4, 8), {})


def test_repro_quick_mode_runs():
    from seqzoo.repro import get_repro

    result = get_repro("spacetime").run(True)
    names = [c.name for c in result.checks]
    assert any("AR" in n for n in names) and any("forecast" in n for n in names)
    assert all(c.measured for c in result.checks)
