"""The tests' independent reference: LAMMPS itself (see :mod:`chemfit_core.roundtrip`)."""

from chemfit_core.roundtrip import EV_PER_A3_IN_BAR, MARGIN, boxed, lammps_reference

__all__ = ["EV_PER_A3_IN_BAR", "MARGIN", "boxed", "lammps_reference"]
