"""The arena (DESIGN.md, Contract 4): train a grid of mixers × tasks × sizes × learning rates, store every run in
SQLite, and render a static HTML report. ``seqzoo arena CONFIG`` and ``seqzoo report DB`` are the entry points."""

from .db import RunDB
from .runner import ArenaConfig, best_over_lr, expand_grid, format_leaderboard, run_arena, run_key
from .tasks import ArenaTask, get_task, list_tasks, register_task

__all__ = ["ArenaConfig", "ArenaTask", "RunDB", "best_over_lr", "expand_grid", "format_leaderboard", "get_task",
           "list_tasks", "register_task", "run_arena", "run_key"]
