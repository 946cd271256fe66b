"""torch-sim's module path ``autobatching``: the same module as :mod:`chemfit_core.engine.autobatching`.

Scripts written for torch-sim import ``chemfit_core.autobatching``; the code lives in the engine
layer. The alias is the module itself (not a copy), so patches and isinstance checks agree.
"""

import sys

from chemfit_core.engine import autobatching as _module

sys.modules[__name__] = _module
