"""Softmax-attention family: full, windowed and sparse/structured attention variants.

Every module in this package is imported (and so its mixers registered) when the package is imported.
"""

from .._discover import import_all

import_all(__name__, __path__)
