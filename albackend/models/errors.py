"""Failures of the model layer that a user can fix, importable without torch (a CLI names them before it loads
any model). :class:`albackend.models.registry.ModelNotFound` is the other one."""
from __future__ import annotations


class DistilError(ValueError):
    """A distillation that cannot start or resume as asked (bad layers, no texts, other checkpoint settings)."""
