"""seqzoo: autoregressive transformers and efficient sequence models behind shared, tested contracts.

Layers (arrows point down): cli → repro/arena → train/generation/tasks → models → mixers → ops → core.
"""

from .core import Mixer, SeqzooError, build_mixer, list_mixers

__version__ = "0.1.0"
__all__ = ["Mixer", "SeqzooError", "build_mixer", "list_mixers", "__version__"]
