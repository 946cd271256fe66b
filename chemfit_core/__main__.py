"""``python -m chemfit_core`` is the ``chemfit`` command."""

import sys

from chemfit_core.cli import main

sys.exit(main())
