"""Let ``import open_clip`` work with CPU torch and PyPI's CUDA torchvision wheel.

The torchvision wheel's compiled ops do not load against the CPU torch build, and its meta
registrations then fail on the missing ``torchvision::nms`` schema. Declaring the two schemas
before torchvision is imported lets its pure-Python parts (transforms) import; detection ops stay
unusable, which these tests never need. Import this module before ``open_clip`` or ``timm``.
"""

from __future__ import annotations

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

try:
    _LIB = torch.library.Library("torchvision", "DEF")
    for _schema in _SCHEMAS:
        _LIB.define(_schema)
except RuntimeError:  # already defined (torchvision's own ops loaded, or imported twice)
    pass
