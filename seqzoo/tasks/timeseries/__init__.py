"""Time-series forecasting data: the Time-Series-Library protocol (splits, scaling, windows, metrics) and loaders.

- :mod:`.data` — :func:`~.data.load_forecast_data` (ETT 12/4/4-month or 70/20/10 splits, train-only scaler,
  stride-1 windows, ``M``/``S``/``MS``), :class:`~.data.ForecastData` and its batch loaders;
- :mod:`.timefeatures` — TSLib's ``timeF`` calendar features;
- :mod:`.metrics` — MSE / MAE over every window;
- :mod:`.training` — :func:`~.training.fit_forecaster` (the TSLib training loop) and
  :func:`~.training.evaluate_forecaster`;
- :mod:`.pretrain` — pretraining mixtures for the foundation-style forecasters.

The CLI on top is ``seqzoo forecast train|eval|predict`` (``seqzoo/cli/forecast.py``); the user guide is
``docs/timeseries.md``.
"""
