"""Typed Python client of dnd-service (grows with the client issue)."""

from __future__ import annotations

from dnd.v1 import dnd_pb2, dnd_pb2_grpc

__all__ = ["dnd_pb2", "dnd_pb2_grpc"]
