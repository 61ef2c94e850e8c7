"""What a retrain schedule hands the retrain job it starts."""

from __future__ import annotations

__all__ = ["SLOT_ENV"]

SLOT_ENV = "MLOPS_SCHEDULE_SLOT"
"""The variable through which a run learns its slot (its idempotency key): the same for every
attempt of one slot, different for every slot. Kubernetes sets it from the Job's name, the
Docker target's scheduler (`mlops schedule`) from the slot's time."""
