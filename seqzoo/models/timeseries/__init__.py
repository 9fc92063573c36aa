"""Forecasting backbones (time-series domain). Data and the evaluation protocol live in ``seqzoo.tasks.timeseries``."""

from .base import Forecaster, build_forecaster, forecaster_entry, list_forecasters, register_forecaster

__all__ = ["Forecaster", "build_forecaster", "forecaster_entry", "list_forecasters", "register_forecaster"]
