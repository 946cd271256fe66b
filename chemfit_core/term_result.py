"""What an objective term computed in one evaluation, as a typed record.

Terms that know more than their loss (the liquid, crystal and structure targets) put a
:class:`TermResult` on their context (``ctx.result``); :class:`~chemfit_core.fitter.Fitter`
(least squares, history), the MPI wrapper, validation and the report read it from there.
A plain ChemFit-style term that only returns its loss needs none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass
class TermResult:
    """One term's outcome besides its loss; every value in the property's own unit.

    Attributes:
        residuals: (value − reference)/denominator of each fitted quantity, in a fixed order.
        jacobian: ``{parameter: [d residual_k / d parameter, ...]}`` when the term knows it
            (fluctuation formula, autograd); None otherwise.
        properties: computed quantities by name (``density_kg_m3``, ``a0_A``...).
        standard_errors: statistical standard error of properties (MD block averages).
        derivatives: ``{property: {parameter: d property / d parameter}}`` where known.
    """

    residuals: list[float] | None = None
    jacobian: dict[str, list[float]] | None = None
    properties: dict[str, float] = dataclasses.field(default_factory=dict)
    standard_errors: dict[str, float] = dataclasses.field(default_factory=dict)
    derivatives: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.residuals is not None:
            self.residuals = [float(r) for r in self.residuals]
        if self.jacobian is not None and self.residuals is not None:
            for name, column in self.jacobian.items():
                if len(column) != len(self.residuals):
                    raise ValueError(
                        f"jacobian column {name!r} has {len(column)} entries for {len(self.residuals)} residuals"
                    )

    def loss(self) -> float:
        """Σ r² of the residuals (0 without residuals)."""
        import math

        return math.fsum(r * r for r in self.residuals or ())

    def jacobian_matrix(self, names: Sequence[str]) -> Any:
        """``[n_residuals, len(names)]`` numpy array; parameters the term does not depend on get 0."""
        import numpy as np

        if self.jacobian is None or self.residuals is None:
            raise ValueError("this term reported no Jacobian")
        n = len(self.residuals)
        return (
            np.column_stack([np.asarray(self.jacobian.get(name, np.zeros(n)), dtype=float) for name in names])
            if names
            else np.zeros((n, 0))
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what fit.json and the evaluation cache keep)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TermResult | None:
        """Inverse of :meth:`to_dict` (None stays None)."""
        if data is None:
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})
