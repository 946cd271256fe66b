"""Optimal rigid alignment of paired point sets (Kabsch algorithm), at ChemFit's module path.

Convention: points are rows, ``Q ≈ P @ R + t``. Works in any dimension and with weights.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def _points(a: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) array of points, got shape {arr.shape}")
    return arr


def _weights(weights: ArrayLike | None, n: int) -> FloatArray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have one entry per point ({n}), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("weights must have a positive sum")
    return w


def kabsch(
    P: ArrayLike, Q: ArrayLike, weights: ArrayLike | None = None, allow_reflection: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Rotation ``R`` (D×D) and translation ``t`` (D) minimising Σ wᵢ ‖pᵢ R + t − qᵢ‖².

    ``R`` is a proper rotation (det +1) unless ``allow_reflection``. Raises ``ValueError``
    for mismatched shapes, fewer points than dimensions or invalid weights.
    """
    p, q = _points(P, "P"), _points(Q, "Q")
    if p.shape != q.shape:
        raise ValueError(f"P and Q must have the same shape, got {p.shape} and {q.shape}")
    n, dim = p.shape
    if n < dim:
        raise ValueError(f"{n} points cannot determine a rotation in {dim} dimensions")
    w = _weights(weights, n)
    w = w / w.sum()
    centroid_p = w @ p / w.sum()
    centroid_q = w @ q / w.sum()
    root_w = np.sqrt(w)[:, None]
    covariance = ((p - centroid_p) * root_w).T @ ((q - centroid_q) * root_w)
    u, _, vt = np.linalg.svd(covariance)
    if not allow_reflection and np.linalg.det(u @ vt) < 0:
        u[:, -1] *= -1.0  # the closest proper rotation flips the weakest axis
    rotation = u @ vt
    translation = centroid_q - centroid_p @ rotation
    return rotation, translation


def apply_transform(P: ArrayLike, R: ArrayLike, t: ArrayLike) -> FloatArray:
    """``P @ R + t``."""
    return _points(P, "P") @ np.asarray(R, dtype=np.float64) + np.asarray(t, dtype=np.float64)


def rmsd(A: ArrayLike, B: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Root of the (weighted) mean squared distance between paired points."""
    a, b = _points(A, "A"), _points(B, "B")
    if a.shape != b.shape:
        raise ValueError(f"A and B must have the same shape, got {a.shape} and {b.shape}")
    w = _weights(weights, a.shape[0])
    return float(np.sqrt(np.sum(w * np.sum((a - b) ** 2, axis=1)) / w.sum()))
