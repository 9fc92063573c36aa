"""Contracts, state, registry, configuration and errors shared by every layer of seqzoo."""

from .errors import SeqzooError
from .mixer import Mixer, get_optim, set_optim
from .registry import build_mixer, list_mixers, mixer_entry, mixer_options, register_mixer
from .state import State, map_state, select_batch, state_dtype, state_numel

__all__ = ["SeqzooError", "Mixer", "set_optim", "get_optim", "register_mixer", "list_mixers", "build_mixer",
           "mixer_entry", "mixer_options", "State", "map_state", "select_batch", "state_dtype", "state_numel"]
