"""Pre-encoded gRPC request frames for h2load, and a one-call check that a frame gets
``grpc-status: 0`` (h2load counts any HTTP 200 as a success, even a failed RPC).

A gRPC message on HTTP/2 is a 5-byte prefix (1 byte compressed flag = 0, 4-byte big-endian
length) followed by the serialized protobuf.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")

CHECK_SEND = "/dnd.v1.DndService/CheckSend"
BATCH_CHECK_SEND = "/dnd.v1.DndService/BatchCheckSend"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def frame(payload: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\0" + struct.pack(">I", len(payload)) + payload


def write_frame(folder: Path, name: str, message: Message) -> Path:
    path = folder / f"{name}.bin"
    path.write_bytes(frame(message.SerializeToString()))
    return path


@dataclass(frozen=True)
class Verified:
    """What one call of the frame answered."""

    tool: str
    grpc_status: int
    grpc_message: str
    # Bytes of the response's DATA (prefix + message): what every successful call returns.
    response_frame_len: int
    response: bytes

    @property
    def ok(self) -> bool:
        return self.grpc_status == 0 and self.response_frame_len > 0


def python_call(addr: str, method: str, payload: bytes, timeout: float = 10.0) -> Verified:
    """The call made by grpcio with the raw bytes (no stub): status and response bytes."""
    with grpc.insecure_channel(addr) as channel:
        call: Any = channel.unary_unary(method)  # bytes in, bytes out
        try:
            answer: bytes = call(payload, timeout=timeout)
        except grpc.RpcError as error:
            failed: Any = error
            code = failed.code()
            return Verified("grpcio", code.value[0], failed.details() or "", 0, b"")
        return Verified("grpcio", 0, "", len(answer) + 5, answer)


_STATUS = re.compile(r"recv \(stream_id=\d+\) grpc-status: (\d+)")
_MESSAGE = re.compile(r"recv \(stream_id=\d+\) grpc-message: (.*)")
_DATA = re.compile(r"recv DATA frame <length=(\d+)")


def nghttp_call(addr: str, method: str, frame_path: Path, timeout: float = 20.0) -> Verified | None:
    """The same frame sent over HTTP/2 by ``nghttp -v`` (the way h2load sends it): the
    ``grpc-status`` trailer and the DATA bytes received. None when nghttp is not installed."""
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        return None
    command = [nghttp, "-v", "-n", "-d", str(frame_path)]
    for header in GRPC_HEADERS:
        command += ["-H", header]
    command.append(f"http://{addr}{method}")
    done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    text = done.stdout.decode("latin-1") + done.stderr.decode("latin-1")
    status = _STATUS.search(text)
    message = _MESSAGE.search(text)
    data = sum(int(n) for n in _DATA.findall(text))
    return Verified(
        "nghttp",
        int(status.group(1)) if status else -1,
        message.group(1).strip() if message else ("" if status else text[-500:]),
        data,
        b"",
    )
