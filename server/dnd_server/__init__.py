"""dnd-service: the Do-Not-Disturb (messaging consent) gRPC service."""

from __future__ import annotations

__version__ = "0.1.0"
