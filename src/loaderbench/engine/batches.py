"""What a batch holds: its tensors, and their bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def tensor_bytes(obj: Any) -> int:
    """Bytes of all tensors in a (nested) batch."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.numel()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0
