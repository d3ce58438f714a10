"""Parsing a torch device name, with one-line errors for devices this machine does not have."""
from __future__ import annotations

import torch

from dvis.errors import DvisError


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse a device name; raises :class:`DvisError` when it is unknown or not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DvisError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DvisError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DvisError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DvisError(f"device {device!r} requested but MPS is not available on this machine")
    return dev
