"""dnd-service: the Do-Not-Disturb (messaging consent) gRPC service."""

from __future__ import annotations

import os

# The service forks only to exec another program (pg_ctl of the embedded PostgreSQL, worker
# processes). gRPC's fork handlers exist for children that go on using gRPC; in ours they only
# run between fork and exec while other threads are inside gRPC, where they can crash the child.
# Set before gRPC is first imported; an operator's explicit setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
