"""torch-sim's module path ``state``: the same module as :mod:`chemfit_core.engine.state`.

Scripts written for torch-sim import ``chemfit_core.state``; the code lives in the engine
layer. The alias is the module itself (not a copy), so patches and isinstance checks agree.
"""

import sys

from chemfit_core.engine import state as _module

sys.modules[__name__] = _module
