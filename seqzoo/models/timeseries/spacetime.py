"""SpaceTime forecaster: an encoder of companion-SSM layers and a closed-loop SSM decoder that forecasts any horizon.

Paper: "Effectively Modeling Time Series with Simple Discrete State Spaces", Michael Zhang, Khaled K. Saab, Michael
Poli, Tri Dao, Karan Goel and Christopher Ré, ICLR 2023, arXiv 2303.09489 (sec. 3.2: the architecture; sec. 3.3:
the closed-loop decoder). The SSM layer itself is :class:`seqzoo.mixers.ssm.spacetime.SpaceTime` (companion matrix
``A = S + a e_{N−1}ᵀ``, ``s_t = A s_{t−1} + b u_t``, ``y_t = cᵀ s_t + D u_t``, one SSM per channel).

For a lookback window (each variate on its own with ``channel_independent``, the default; otherwise all variates
embedded together):

    u      = x − x_L                        (``norm="last"``: the reference code's "last" input transform;
                                             ``"revin"``: RevIN; ``"none"``)
    z_0    = W_in u                          (a linear embedding, 1 → d or C → d)
    z_ℓ    = z_ℓ−1 + SpaceTime_ℓ(LN(z_ℓ−1));  z_ℓ = z_ℓ + FFN_ℓ(LN(z_ℓ))        (ℓ = 1 … n_layers, the encoder)
    v      = LN(z_n)                        (keeps the decoder's next-input targets at unit scale)
    decoder (closed loop): s_T = state after v_1 … v_T open loop,  û_{t+1} = kᵀ s_t,
             s_{T+h} = (A + b kᵀ) s_{T+h−1},  y_{T+h} = cᵀ s_{T+h} + D û_{T+h}       (h = 1 … H)
    ŷ_{T+h} = W_out y_{T+h} + x_L

Because the decoder feeds its own predicted inputs back, one model forecasts any horizon (``pred_len`` only sets
the default; :meth:`SpaceTimeForecaster.forecast_horizon` takes any ``horizon``). Training signal: the horizon MSE
of ŷ (the trainer's loss) plus the decoder's next-input MSE ``‖û_{t+1} − v_{t+1}‖²`` over the lookback, which
this forecaster reports as ``aux_loss`` (weight ``next_input_weight``), as in the reference code's closed-loop
training.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ...core.errors import SeqzooError
from ...mixers.ssm.spacetime import SpaceTime
from ._instance_norm import instance_denormalize, instance_normalize
from .base import Forecaster, register_forecaster

NORMS = ("last", "revin", "none")


@register_forecaster("spacetime", paper="Effectively Modeling Time Series with Simple Discrete State Spaces",
                     arxiv="2303.09489")
class SpaceTimeForecaster(Forecaster):
    """SpaceTime (arXiv 2303.09489): linear embedding → ``n_layers`` × [SpaceTime + FFN, pre-norm residual] →
    LayerNorm → closed-loop SpaceTime decoder rolled out over the horizon → linear output.

    Options: ``d_model``, ``n_layers`` (encoder depth; 0 allowed), ``d_state`` (N), ``a_norm`` of the companion
    column, ``norm`` in ``NORMS``, ``channel_independent``, ``decoder_norm`` (the LayerNorm before the decoder),
    ``next_input_weight`` (weight of the closed-loop next-input loss in ``aux_loss``), ``closed_loop_impl``
    ("recurrent" steps, "fft" doubling), ``dropout``.
    """

    ett_recipe = {
        "options": {"d_model": 64, "n_layers": 2, "d_state": 32, "norm": "last", "channel_independent": True},
        "lr": 1e-3, "batch_size": 32, "epochs": 10, "patience": 3,
        "source": "not the paper's ETT configs (not verified here): the settings of seqzoo's spacetime repro "
                  "(lr 1e-3, d_state 32, 2 layers, 'last' transform, fixed there beforehand) with d_model 64; "
                  "TSLib's batch 32, 10 epochs, patience 3",
    }

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_time: int = 4, d_model: int = 64,
                 n_layers: int = 2, d_state: int = 32, a_norm: str = "l1", norm: str = "last",
                 channel_independent: bool = True, decoder_norm: bool = True, next_input_weight: float = 1.0,
                 closed_loop_impl: str = "recurrent", dropout: float = 0.0):
        super().__init__(seq_len, pred_len, n_vars, n_time)
        if norm not in NORMS:
            raise SeqzooError(f"spacetime forecaster norm {norm!r} is not valid; valid: {', '.join(NORMS)}")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
            raise SeqzooError(f"spacetime forecaster n_layers must be a non-negative int, got {n_layers!r}")
        if closed_loop_impl not in SpaceTime.IMPLS:
            raise SeqzooError(f"closed_loop_impl {closed_loop_impl!r} is not valid; valid: "
                              f"{', '.join(SpaceTime.IMPLS)}")
        self.norm, self.channel_independent = norm, channel_independent
        self.next_input_weight, self.closed_loop_impl = float(next_input_weight), closed_loop_impl
        width = 1 if channel_independent else n_vars
        self.embed = nn.Linear(width, d_model)
        self.enc_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(2 * n_layers))
        self.ssms = nn.ModuleList(SpaceTime(d_model, d_state=d_state, a_norm=a_norm) for _ in range(n_layers))
        self.ffns = nn.ModuleList(nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout),
                                                nn.Linear(2 * d_model, d_model)) for _ in range(n_layers))
        self.decoder_norm = nn.LayerNorm(d_model) if decoder_norm else nn.Identity()
        self.decoder = SpaceTime(d_model, d_state=d_state, a_norm=a_norm)
        self.out = nn.Linear(d_model, width)

    def _encode(self, u: Tensor) -> Tensor:
        z = self.embed(u)
        for i, (ssm, ffn) in enumerate(zip(self.ssms, self.ffns)):
            z = z + ssm(self.enc_norms[2 * i](z))[0]
            z = z + ffn(self.enc_norms[2 * i + 1](z))
        return self.decoder_norm(z)

    def forecast_horizon(self, x: Tensor, horizon: int) -> Tensor:
        """Forecast ``horizon`` steps (any length) from ``x [B, seq_len, C]`` by the closed loop: ``[B, horizon, C]``.
        Sets ``aux_loss`` to the weighted next-input loss of the decoder."""
        batch, length, n_vars = x.shape
        if self.norm == "last":
            offset = x[:, -1:]
            u = x - offset
        elif self.norm == "revin":
            u, mean, std = instance_normalize(x)
        else:
            u = x
        if self.channel_independent:
            u = u.transpose(1, 2).reshape(batch * n_vars, length, 1)
        v = self._encode(u)
        _, u_hat, state = self.decoder.next_inputs(v)
        if length > 1:
            self.aux_loss = self.next_input_weight * F.mse_loss(u_hat[:, :-1], v[:, 1:].detach())
        y, _, _ = self.decoder.closed_loop(state, horizon, impl=self.closed_loop_impl)
        y = self.out(y.to(v.dtype))
        if self.channel_independent:
            y = y.reshape(batch, n_vars, horizon).transpose(1, 2)
        if self.norm == "last":
            return y + offset
        if self.norm == "revin":
            return instance_denormalize(y, mean, std)
        return y

    def forecast(self, x: Tensor, x_mark: Tensor | None, y_mark: Tensor | None) -> Tensor:
        return self.forecast_horizon(x, self.pred_len)


__all__ = ["SpaceTimeForecaster", "NORMS"]
