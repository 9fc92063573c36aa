"""State-space family: S4, S4D, LSSL, Mamba, MambaMixer, SpaceTime, ConvS5.

Every module in this package is imported (and so its mixers registered) when the package is imported.
"""

from .._discover import import_all

import_all(__name__, __path__)
