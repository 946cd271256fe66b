"""Where a model runs: moving ours to a device and dtype, respecting models that fix their own.

Used by :func:`~chemfit_core.engine.relax.relax_structures` and the ASE calculator.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

__all__ = ["place_model"]


def place_model(
    model: Any, device: str | torch.device | None, dtype: torch.dtype | None
) -> tuple[Any, torch.device, torch.dtype]:
    """Put ``model`` on ``device``/``dtype`` (defaults: CUDA when available, float64); return where it runs.

    A model is moved with ``.to`` unless it fixes its own placement: torch-sim's
    ``ModelInterface`` (``device``/``dtype`` properties with setters that refuse) or
    any model with plain ``device``/``dtype`` attributes and no ``.to``. A model that
    runs elsewhere than asked explicitly is an error; otherwise it decides.
    """
    wanted_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    wanted_dtype = dtype or torch.float64
    if hasattr(model, "to") and not (_fixed(model, "device") or _fixed(model, "dtype")):
        moved = model.to(device=wanted_device, dtype=wanted_dtype)
        model = model if moved is None else moved
    has_device, has_dtype = getattr(model, "device", None), getattr(model, "dtype", None)
    run_device = wanted_device if has_device is None else torch.device(has_device)
    run_dtype = wanted_dtype if has_dtype is None else has_dtype
    if not _same_device(run_device, wanted_device):
        if device is not None:
            raise ValueError(f"the model runs on {run_device} and cannot be moved to {wanted_device}")
    else:
        run_device = wanted_device
    if run_dtype != wanted_dtype and dtype is not None:
        raise ValueError(f"the model computes in {run_dtype} and cannot be converted to {wanted_dtype}")
    return model, run_device, run_dtype


def _fixed(model: Any, name: str) -> bool:
    """Whether ``model`` fixes ``name``: a property with a setter (torch-sim's refuse) or a plain attribute."""
    declared = inspect.getattr_static(type(model), name, None)
    if isinstance(declared, property):
        return declared.fset is not None
    return hasattr(model, name) and not callable(getattr(model, name))


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)
