"""Calendar features of Time-Series-Library's ``embed=timeF`` (``utils/timefeatures.py``), computed from timestamps.

Each feature is an integer calendar field scaled to [-0.5, 0.5]:

    SecondOfMinute = second / 59 − 0.5        MinuteOfHour = minute / 59 − 0.5
    HourOfDay      = hour / 23 − 0.5          DayOfWeek    = weekday / 6 − 0.5      (Monday = 0)
    DayOfMonth     = (day − 1) / 30 − 0.5     DayOfYear    = (day of year − 1) / 365 − 0.5
    MonthOfYear    = (month − 1) / 11 − 0.5   WeekOfYear   = (ISO week − 1) / 52 − 0.5

Which features a frequency uses (the ``freq`` argument of TSLib; its default ``h`` is what the ETT scripts use,
also for the 15-minute ETTm files):

    s: second, minute, hour, weekday, day of month, day of year      t: minute, hour, weekday, day of month, day of year
    h: hour, weekday, day of month, day of year                      d, b: weekday, day of month, day of year
    w: day of month, week of year                                    m: month of year
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...core.errors import choice_error

_FIELDS = {
    "second": lambda d: d.second / 59.0 - 0.5,
    "minute": lambda d: d.minute / 59.0 - 0.5,
    "hour": lambda d: d.hour / 23.0 - 0.5,
    "weekday": lambda d: d.day_of_week / 6.0 - 0.5,
    "day": lambda d: (d.day - 1) / 30.0 - 0.5,
    "dayofyear": lambda d: (d.day_of_year - 1) / 365.0 - 0.5,
    "month": lambda d: (d.month - 1) / 11.0 - 0.5,
    "week": lambda d: (d.isocalendar().week.to_numpy(dtype=np.float64) - 1) / 52.0 - 0.5,
}

FREQ_FEATURES: dict[str, tuple[str, ...]] = {
    "s": ("second", "minute", "hour", "weekday", "day", "dayofyear"),
    "t": ("minute", "hour", "weekday", "day", "dayofyear"),
    "h": ("hour", "weekday", "day", "dayofyear"),
    "d": ("weekday", "day", "dayofyear"),
    "b": ("weekday", "day", "dayofyear"),
    "w": ("day", "week"),
    "m": ("month",),
}


def time_features(dates, freq: str = "h") -> np.ndarray:
    """``timeF`` features of ``dates`` (anything ``pd.DatetimeIndex`` accepts) as a float32 array ``[T, F]``."""
    key = str(freq).lower()
    if key not in FREQ_FEATURES:
        raise choice_error("time-feature frequency", freq, FREQ_FEATURES)
    index = pd.DatetimeIndex(dates)
    columns = [np.asarray(_FIELDS[name](index), dtype=np.float64) for name in FREQ_FEATURES[key]]
    return np.stack(columns, axis=1).astype(np.float32)


def n_time_features(freq: str = "h") -> int:
    key = str(freq).lower()
    if key not in FREQ_FEATURES:
        raise choice_error("time-feature frequency", freq, FREQ_FEATURES)
    return len(FREQ_FEATURES[key])
