"""The tests' independent reference: LAMMPS itself (see :mod:`chemfit_core.external.single_point`)."""

from chemfit_core.external.single_point import MARGIN, boxed, lammps_reference
from chemfit_core.units import LAMMPS_EV_PER_A3_IN_BAR as EV_PER_A3_IN_BAR

__all__ = ["EV_PER_A3_IN_BAR", "MARGIN", "boxed", "lammps_reference"]
