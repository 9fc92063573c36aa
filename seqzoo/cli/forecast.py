"""``seqzoo forecast train | eval | predict``: point at a CSV, train a registered forecaster under the
Time-Series-Library protocol, score it, and write forecasts.

    seqzoo forecast train --data ETTh1.csv --model dlinear --horizon 96 [--features M|S|MS] [--target OT]
                          [--seq-len 96] [--out DIR] [--set option=value ...] [--epochs N] [--lr X] [--batch-size N]
    seqzoo forecast eval DIR [--data CSV]                       # test-split MSE/MAE → DIR/eval.json
    seqzoo forecast predict DIR [--data CSV] [--window I | --future] [--csv F] [--plot F]

``train`` uses the model's ``ett_recipe`` (lr, batch size, epochs, patience, model options) unless overridden,
writes an atomic safetensors checkpoint (``DIR/checkpoint``, :mod:`seqzoo.train.checkpoint`) whose config holds
the model, data settings and fitted scaler, and ``DIR/metrics.json`` (validation and test MSE/MAE, per-epoch
history). ``predict`` forecasts one test window (default: the last one) or, with ``--future``, the ``horizon``
steps after the end of the CSV; it writes a CSV (dates, forecast and, when known, true values, in original units)
and a PNG plot of history, truth and forecast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.errors import SeqzooError

CHECKPOINT = "checkpoint"


def _parse_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_sets(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SeqzooError(f"bad --set {pair!r}; write option=value, e.g. --set moving_avg=25")
        options[key.strip()] = _parse_value(value)
    return options


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def _load_run(run_dir: str):
    """``(config, model)`` of a trained run directory (or its checkpoint directory)."""
    from ..models.timeseries import build_forecaster
    from ..train.checkpoint import checkpoint_info, load_model_state

    p = Path(run_dir)
    ckpt = p / CHECKPOINT if (p / CHECKPOINT).is_dir() else p
    info = checkpoint_info(ckpt)
    cfg = info["config"]
    if cfg.get("kind") != "forecaster":
        raise SeqzooError(f"{str(p)!r} is not a forecaster run (train one with seqzoo forecast train)")
    d = cfg["data"]
    model = build_forecaster(cfg["model"], seq_len=d["seq_len"], pred_len=d["pred_len"], n_vars=len(d["columns"]),
                             n_time=d["n_time"], **cfg["options"])
    load_model_state(ckpt, model)
    model.eval()
    return cfg, model


def _load_data(cfg: dict, path: str | None, *, stored_scaler: bool):
    from ..tasks.timeseries.data import StandardScaler, load_forecast_data

    d = cfg["data"]
    scaler = StandardScaler(d["scaler"]["mean"], d["scaler"]["std"]) if stored_scaler else None
    data = load_forecast_data(path or d["path"], seq_len=d["seq_len"], pred_len=d["pred_len"], features=d["features"],
                              target=d["target"], freq=d["freq"], layout=d["layout"], date_column=d["date_column"],
                              scaler=scaler)
    if data.columns != d["columns"]:
        raise SeqzooError(f"the data columns {data.columns} differ from the trained model's {d['columns']}")
    return data


def _cmd_train(args) -> int:
    import torch

    from ..tasks.timeseries.data import load_forecast_data
    from ..tasks.timeseries.training import build_for_data, check_recipe, evaluate_forecaster, fit_forecaster, \
        model_recipe
    from ..train.checkpoint import save_checkpoint

    recipe = model_recipe(args.model)
    recipe["options"].update(_parse_sets(args.set))
    for key, value in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size),
                       ("patience", args.patience)):
        if value is not None:
            recipe[key] = value
    recipe = check_recipe(recipe)
    data = load_forecast_data(args.data, seq_len=args.seq_len, pred_len=args.horizon, features=args.features,
                              target=args.target, freq=args.freq, layout=args.layout, date_column=args.date_column)
    out = Path(args.out or f"runs/forecast-{args.model}-{Path(args.data).stem}-H{args.horizon}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = build_for_data(args.model, data, recipe["options"])
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()):,} parameters; data {data.path} "
          f"({data.layout}, {data.features}, {data.n_vars} variates; windows "
          + ", ".join(f"{s} {data.num_windows(s)}" for s in ("train", "val", "test")) + ")")
    history = fit_forecaster(model, data, recipe, seed=args.seed, log=None if args.quiet else print)
    val = evaluate_forecaster(model, data.loader("val", recipe["batch_size"]))
    test = evaluate_forecaster(model, data.loader("test", recipe["batch_size"]))
    describe = data.describe()
    config = {"kind": "forecaster", "model": args.model, "options": recipe["options"],
              "recipe": {k: v for k, v in recipe.items() if k != "options"}, "seed": args.seed,
              "data": {**describe, "n_time": data.n_time, "date_column": args.date_column,
                       "scaler": data.scaler.state()}}
    metrics = {"val": val, "test": test, "history": history, "model": args.model, "horizon": args.horizon,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    save_checkpoint(out / CHECKPOINT, model=model, step=history["epochs_run"], config=config,
                    metrics={"val_mse": val["mse"], "test_mse": test["mse"], "test_mae": test["mae"]})
    _write_json(out / "metrics.json", metrics)
    print(f"val mse {val['mse']:.4f} mae {val['mae']:.4f}; test mse {test['mse']:.4f} mae {test['mae']:.4f} "
          f"({test['windows']} windows)")
    print(f"run: {out}")
    return 0


def _cmd_eval(args) -> int:
    from ..tasks.timeseries.training import evaluate_forecaster

    cfg, model = _load_run(args.run)
    data = _load_data(cfg, args.data, stored_scaler=False)
    test = evaluate_forecaster(model, data.loader("test", int(cfg["recipe"].get("batch_size", 32))))
    result = {"model": cfg["model"], "data": data.path, "horizon": data.pred_len, "split": "test", **test}
    _write_json(Path(args.json) if args.json else Path(args.run) / "eval.json", result)
    print(json.dumps(result, indent=2))
    return 0


def _future_inputs(cfg: dict, path: str | None):
    """History (last seq_len rows of the CSV, scaled with the run's scaler), its marks, the horizon's dates/marks."""
    import numpy as np
    import pandas as pd
    import torch

    from ..tasks.timeseries.data import StandardScaler, infer_step, read_series_csv
    from ..tasks.timeseries.timefeatures import time_features

    d = cfg["data"]
    dates, frame, _ = read_series_csv(path or d["path"], target=d["target"], date_column=d["date_column"])
    if d["features"] == "S":
        frame = frame[[d["target"]]]
    if list(frame.columns) != d["columns"]:
        raise SeqzooError(f"the data columns {list(frame.columns)} differ from the trained model's {d['columns']}")
    L, H = d["seq_len"], d["pred_len"]
    if len(frame) < L:
        raise SeqzooError(f"the CSV has {len(frame)} rows; forecasting needs the last seq_len={L}")
    scaler = StandardScaler(d["scaler"]["mean"], d["scaler"]["std"])
    hist = scaler.transform(frame.to_numpy()[-L:]).astype(np.float32)
    step = infer_step(dates)
    future = pd.DatetimeIndex([dates[-1] + step * (i + 1) for i in range(H)])
    x = torch.from_numpy(hist)[None]
    x_mark = torch.from_numpy(time_features(dates[-L:], d["freq"]))[None]
    y_mark = torch.from_numpy(time_features(future, d["freq"]))[None]
    return x, x_mark, y_mark, dates[-L:], future, scaler


def _cmd_predict(args) -> int:
    import numpy as np
    import pandas as pd
    import torch

    cfg, model = _load_run(args.run)
    d = cfg["data"]
    columns = d["columns"][-1:] if d["features"] == "MS" else d["columns"]
    if args.future:
        x, x_mark, y_mark, hist_dates, dates, scaler = _future_inputs(cfg, args.data)
        truth = None
        cols = slice(len(d["columns"]) - 1, None) if d["features"] == "MS" else slice(None)
        unscale = lambda a: scaler.inverse_transform(a, cols)  # noqa: E731
    else:
        data = _load_data(cfg, args.data, stored_scaler=True)
        n = data.num_windows("test")
        index = n - 1 if args.window is None else args.window
        if not -n <= index < n:
            raise SeqzooError(f"--window {index} is out of range; the test split has {n} windows (0..{n - 1})")
        index %= n
        start = int(data.starts("test")[index])
        x, y, x_mark, y_mark = data.window("test", index)
        hist_dates = data.dates[start:start + data.seq_len]
        dates = data.dates[start + data.seq_len:start + data.seq_len + data.pred_len]
        truth = data.inverse_transform(y[0].numpy())
        unscale = data.inverse_transform
    with torch.no_grad():
        pred = model(x, x_mark, y_mark)[0]
    pred = pred[:, -1:] if d["features"] == "MS" else pred
    forecast = unscale(pred.numpy())
    history = unscale(x[0, :, -1:].numpy() if d["features"] == "MS" else x[0].numpy())
    table = pd.DataFrame({"date": dates})
    for j, c in enumerate(columns):
        table[c] = forecast[:, j]
        if truth is not None:
            table[f"{c}_true"] = truth[:, j]
    run = Path(args.run)
    csv_path = Path(args.csv) if args.csv else run / ("forecast_future.csv" if args.future else "forecast.csv")
    png_path = Path(args.plot) if args.plot else csv_path.with_suffix(".png")
    table.to_csv(csv_path, index=False)
    _plot(png_path, hist_dates, history, dates, forecast, truth, columns, title=f"{cfg['model']} H={d['pred_len']}")
    if truth is not None:
        err = forecast - truth
        print(f"window error in original units: mse {float(np.mean(err ** 2)):.4g} "
              f"mae {float(np.mean(np.abs(err))):.4g}")
    print(f"forecast: {csv_path}\nplot: {png_path}")
    return 0


def _plot(path: Path, hist_dates, history, dates, forecast, truth, columns, *, title: str, max_panels: int = 8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(range(len(columns)))[-max_panels:]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 2.2 * len(shown)), sharex=True, squeeze=False)
    for ax, j in zip(axes[:, 0], shown):
        ax.plot(hist_dates, history[:, j], color="0.4", lw=1, label="history")
        if truth is not None:
            ax.plot(dates, truth[:, j], color="tab:blue", lw=1, label="truth")
        ax.plot(dates, forecast[:, j], color="tab:orange", lw=1.3, label="forecast")
        ax.set_ylabel(str(columns[j]))
    axes[0, 0].legend(loc="upper left", fontsize=8)
    axes[0, 0].set_title(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_forecast_parser(sub) -> None:
    forecast = sub.add_parser("forecast", help="train / evaluate / run a time-series forecaster on a CSV")
    fsub = forecast.add_subparsers(dest="forecast_command", required=True)

    train = fsub.add_parser("train", help="train a registered forecaster on a CSV (TSLib protocol)")
    train.add_argument("--data", required=True, help="CSV with a date column (e.g. ../shared/data/ett/ETTh1.csv)")
    train.add_argument("--model", required=True, help="a registered forecaster (e.g. dlinear, rlinear)")
    train.add_argument("--horizon", type=int, required=True, help="steps to forecast (96, 192, 336, 720 in TSLib)")
    train.add_argument("--features", default="M", choices=["M", "S", "MS"])
    train.add_argument("--target", help="target column (default: the last column; OT for ETT)")
    train.add_argument("--seq-len", type=int, default=96)
    train.add_argument("--layout", default="auto", help="split layout: auto, ett_hour, ett_minute, ratio")
    train.add_argument("--freq", default="h", help="calendar features (timeF): h (default), t, s, d, b, w, m")
    train.add_argument("--date-column", default="date")
    train.add_argument("--out", help="run directory (default runs/forecast-<model>-<data>-H<horizon>)")
    train.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                       help="a model option, e.g. --set moving_avg=49 (repeatable)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--patience", type=int)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    train.set_defaults(fn=_cmd_train)

    ev = fsub.add_parser("eval", help="test-split MSE/MAE of a trained run (writes RUN/eval.json)")
    ev.add_argument("run", help="run directory written by seqzoo forecast train")
    ev.add_argument("--data", help="CSV to score (default: the training CSV)")
    ev.add_argument("--json", help="where to write the metrics (default RUN/eval.json)")
    ev.set_defaults(fn=_cmd_eval)

    pr = fsub.add_parser("predict", help="forecast CSV (original units) and a PNG plot of forecast vs truth")
    pr.add_argument("run", help="run directory written by seqzoo forecast train")
    pr.add_argument("--data", help="CSV (default: the training CSV)")
    group = pr.add_mutually_exclusive_group()
    group.add_argument("--window", type=int, help="test window index (default: the last; negative counts back)")
    group.add_argument("--future", action="store_true", help="forecast the horizon after the CSV's last row")
    pr.add_argument("--csv", help="forecast CSV path (default RUN/forecast.csv)")
    pr.add_argument("--plot", help="PNG path (default: the CSV path with .png)")
    pr.set_defaults(fn=_cmd_predict)
