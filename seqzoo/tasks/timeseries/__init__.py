"""Time-series forecasting data: the Time-Series-Library protocol (splits, scaling, windows, metrics) and loaders."""
