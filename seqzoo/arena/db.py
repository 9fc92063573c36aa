"""SQLite storage of arena runs (stdlib ``sqlite3``), one row per finished run in the ``runs`` table.

Each row is keyed by the hash of the run's full configuration, so a restarted arena can ask which runs are done
and skip them. Every insert is committed on its own: a SIGKILL loses at most the run that was in progress.
Besides the config and metrics (as JSON), the row records what is needed to compare runs later: state size,
parameter count, wall and CPU seconds, the hardware, the torch version and the git revision of the code.
"""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import torch

from ..core.errors import SeqzooError

COLUMNS = ("run_key", "config_json", "task", "mixer", "d_model", "seq_len", "lr", "seed", "metrics_json",
           "accuracy", "state_size", "parameters", "wall_seconds", "cpu_seconds", "hardware", "torch_version",
           "git_revision", "created_at")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    task TEXT NOT NULL,
    mixer TEXT NOT NULL,
    d_model INTEGER NOT NULL,
    seq_len INTEGER NOT NULL,
    lr REAL NOT NULL,
    seed INTEGER NOT NULL,
    metrics_json TEXT NOT NULL,
    accuracy REAL,
    state_size INTEGER,
    parameters INTEGER,
    wall_seconds REAL,
    cpu_seconds REAL,
    hardware TEXT,
    torch_version TEXT,
    git_revision TEXT,
    created_at TEXT NOT NULL
)
"""


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The commit of the seqzoo checkout (with ``-dirty`` if it has local changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def hardware() -> str:
    """One line naming the machine: CPU, core count and threads torch uses, and the GPU if there is one."""
    import os

    cpu = platform.processor() or platform.machine()
    text = f"{platform.system()} {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


class RunDB:
    """The arena's database file; opens (and creates) it, inserts finished runs, and reads them back."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path))
            self.conn.execute(_SCHEMA)
            self.conn.commit()
        except (OSError, sqlite3.Error) as e:
            raise SeqzooError(f"cannot open arena database {str(self.path)!r}: {e}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def done_keys(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT run_key FROM runs")}

    def insert(self, run_key: str, config: dict, metrics: dict) -> None:
        """Store one finished run and commit at once."""
        row = {
            "run_key": run_key, "config_json": json.dumps(config, sort_keys=True), "task": config["task"],
            "mixer": config["mixer"], "d_model": config["d_model"], "seq_len": config["seq_len"],
            "lr": config["lr"], "seed": config["seed"], "metrics_json": json.dumps(metrics, sort_keys=True),
            "accuracy": metrics.get("accuracy"), "state_size": metrics.get("state_size"),
            "parameters": metrics.get("parameters"), "wall_seconds": metrics.get("wall_seconds"),
            "cpu_seconds": metrics.get("cpu_seconds"), "hardware": hardware(), "torch_version": torch.__version__,
            "git_revision": git_revision(), "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with self.conn:  # commits on success
            self.conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) "
                              f"VALUES ({', '.join('?' for _ in COLUMNS)})", [row[c] for c in COLUMNS])

    def runs(self) -> list[dict]:
        """Every stored run as a dict of its columns, with ``config`` and ``metrics`` decoded."""
        try:
            cursor = self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM runs ORDER BY created_at, rowid")
        except sqlite3.Error as e:
            raise SeqzooError(f"{str(self.path)!r} is not an arena database: {e}") from None
        out = []
        for values in cursor:
            row = dict(zip(COLUMNS, values))
            row["config"] = json.loads(row["config_json"])
            row["metrics"] = json.loads(row["metrics_json"])
            out.append(row)
        return out
