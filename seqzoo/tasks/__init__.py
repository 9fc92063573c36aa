"""Tasks: data and metrics per domain (text, synthetic, time series, ...)."""
