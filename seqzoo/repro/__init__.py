"""``seqzoo repro <paper-id>``: each paper's headline claim at small scale, measured beside its expectation."""

from .base import Check, ReproResult, get_repro, list_repros, register_repro

__all__ = ["Check", "ReproResult", "get_repro", "list_repros", "register_repro"]
