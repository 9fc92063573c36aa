"""The Time-Series-Library training loop (``exp/exp_long_term_forecasting.py``, ``utils/tools.py``) for any
registered :class:`~seqzoo.models.timeseries.Forecaster`.

    for epoch e = 0, 1, …, epochs−1:
        lr_e = lr · 0.5^max(0, e−1)                   # lradj=type1: TSLib halves after each epoch from the 2nd on
        Adam steps on MSE(select(ŷ), y) (+ model.aux_loss when the model sets one) over shuffled train windows
        val = MSE over every validation window
        early stopping: a new best needs val < best (TSLib ``EarlyStopping``, delta 0); stop after ``patience``
        epochs without one
    restore the best-validation weights

A *recipe* is the per-model dict that each forecaster class keeps as ``ett_recipe``::

    {"options": {model kwargs}, "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3,
     "source": "where these come from", "cpu_feasible": True}

(``lradj`` is optional: ``"type1"`` (default) or ``"constant"``; ``cpu_feasible`` marks models whose recipe trains on
ETTh1 in a few CPU minutes, which ``seqzoo repro ltsf`` then runs by default). Models without a recipe get
:data:`TSLIB_DEFAULTS`.

Two differences from TSLib, both outside the scored metric: the validation loss is the mean over all validation
windows (TSLib averages per-batch means, which weights the smaller last batch more), and the best weights are kept
in memory rather than in ``checkpoint.pth``. The test split is never looked at during training.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ...core.errors import SeqzooError, choice_error
from .data import ForecastData, WindowLoader
from .metrics import ErrorSum

TSLIB_DEFAULTS = {"options": {}, "lr": 1e-4, "batch_size": 32, "epochs": 10, "patience": 3,
                  "source": "Time-Series-Library run.py defaults", "cpu_feasible": False}
LRADJ = ("type1", "constant")


def check_recipe(recipe: dict) -> dict:
    """A complete copy of ``recipe`` (missing training keys from :data:`TSLIB_DEFAULTS`), validated."""
    if not isinstance(recipe, dict):
        raise SeqzooError(f"a recipe must be a dict with lr, batch_size, epochs, patience; got {type(recipe).__name__}")
    full = {**TSLIB_DEFAULTS, **recipe}
    full["options"] = dict(full.get("options") or {})
    if not (isinstance(full["lr"], (int, float)) and full["lr"] > 0):
        raise SeqzooError(f"recipe lr must be a positive number, got {full['lr']!r}")
    for key in ("batch_size", "epochs", "patience"):
        v = full[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "patience" else 1):
            raise SeqzooError(f"recipe {key} must be a positive int, got {v!r}")
    if full.get("lradj", "type1") not in LRADJ:
        raise choice_error("lradj", full.get("lradj"), LRADJ)
    return full


def model_recipe(name: str) -> dict:
    """The ``ett_recipe`` of a registered forecaster (TSLib defaults when it defines none), validated."""
    from ...models.timeseries import forecaster_entry

    return check_recipe(copy.deepcopy(getattr(forecaster_entry(name).cls, "ett_recipe", None) or {}))


def build_for_data(name: str, data: ForecastData, options: dict | None = None):
    """A registered forecaster sized for ``data`` (seq_len, pred_len, variates, calendar features)."""
    from ...models.timeseries import build_forecaster

    return build_forecaster(name, seq_len=data.seq_len, pred_len=data.pred_len, n_vars=data.n_vars,
                            n_time=data.n_time, **(options or {}))


def type1_lr(lr: float, epoch: int) -> float:
    """TSLib ``lradj=type1`` learning rate of (0-based) ``epoch``: ``lr`` for the first two, then halved each epoch."""
    return lr * 0.5 ** max(0, epoch - 1)


class EarlyStopping:
    """TSLib's early stopping (delta 0): ``step(val)`` returns whether ``val`` is a new best (strictly lower);
    ``stop`` turns true after ``patience`` epochs in a row without one (never when ``patience`` is 0)."""

    def __init__(self, patience: int):
        self.patience, self.best, self.bad_epochs, self.stop = patience, float("inf"), 0, False

    def step(self, val: float) -> bool:
        if val < self.best:
            self.best, self.bad_epochs = val, 0
            return True
        self.bad_epochs += 1
        self.stop = self.patience > 0 and self.bad_epochs >= self.patience
        return False


def _device_of(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _select(pred: torch.Tensor, target_only: bool) -> torch.Tensor:
    return pred[..., -1:] if target_only else pred


@torch.no_grad()
def evaluate_forecaster(model: nn.Module, loader: WindowLoader, *, device=None) -> dict:
    """MSE / MAE (and the window count) of ``model`` over every window of ``loader`` (eval mode, no grad)."""
    dev = _device_of(model, device)
    was_training = model.training
    model.eval()
    errors = ErrorSum()
    try:
        for x, y, x_mark, y_mark in loader:
            pred = model(x.to(dev), x_mark.to(dev), y_mark.to(dev))
            errors.add(_select(pred, loader.target_only).float(), y)
    finally:
        model.train(was_training)
    return errors.result()


def fit_forecaster(model: nn.Module, data: ForecastData, recipe: dict, *, seed: int = 0, device=None,
                   max_epochs: int | None = None, log=None) -> dict:
    """Train ``model`` on ``data``'s train split with the recipe's TSLib loop; early-stop on the val split and
    restore the best-validation weights. Deterministic given ``seed`` (shuffling and dropout; the model's
    initialisation is the caller's). ``max_epochs`` caps the recipe's epochs (smoke runs); ``log`` receives
    one line per epoch. Returns the history: per-epoch train/val MSE, the best epoch and the wall time."""
    r = check_recipe(recipe)
    epochs = r["epochs"] if max_epochs is None else max(1, min(r["epochs"], int(max_epochs)))
    dev = _device_of(model, device)
    model.to(dev)
    torch.manual_seed(seed)
    train = data.loader("train", r["batch_size"], shuffle=True, seed=seed)
    val = data.loader("val", r["batch_size"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise SeqzooError(f"{type(model).__name__} has no trainable parameters")
    optimizer = torch.optim.Adam(trainable, lr=r["lr"])
    history = {"train_mse": [], "val_mse": [], "lr": [], "best_epoch": None, "best_val_mse": float("inf"),
               "epochs_run": 0, "stopped_early": False}
    best_state, stopper = None, EarlyStopping(r["patience"])
    start = time.perf_counter()
    for epoch in range(epochs):
        lr = type1_lr(r["lr"], epoch) if r.get("lradj", "type1") == "type1" else r["lr"]
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total, count = 0.0, 0
        for x, y, x_mark, y_mark in train:
            x, y, x_mark, y_mark = x.to(dev), y.to(dev), x_mark.to(dev), y_mark.to(dev)
            optimizer.zero_grad(set_to_none=True)
            pred = _select(model(x, x_mark, y_mark), data.target_only)
            loss = nn.functional.mse_loss(pred, y)
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
            aux = getattr(model, "aux_loss", None)
            if aux is not None:
                loss = loss + aux
            if not torch.isfinite(loss):
                raise SeqzooError(f"training diverged at epoch {epoch + 1} (loss {float(loss)}); lower the lr")
            loss.backward()
            optimizer.step()
        val_mse = evaluate_forecaster(model, val, device=dev)["mse"]
        history["train_mse"].append(total / max(count, 1))
        history["val_mse"].append(val_mse)
        history["lr"].append(lr)
        history["epochs_run"] = epoch + 1
        improved = stopper.step(val_mse)
        if improved:
            history["best_val_mse"], history["best_epoch"] = val_mse, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: lr {lr:.3g} train mse {history['train_mse'][-1]:.4f} "
                f"val mse {val_mse:.4f}{' (best)' if improved else ''} [{time.perf_counter() - start:.1f}s]")
        if stopper.stop:
            history["stopped_early"] = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["seconds"] = time.perf_counter() - start
    return history
