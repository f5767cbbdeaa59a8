"""Length-prefixed frames on pipes: ``!II`` (header length, payload length), a JSON header, a payload.

Reads go straight into ``bytearray`` buffers (``os.readv``), so the worker can zero a job's code and a
render's bytes after use instead of leaving copies in memory that a later forked render inherits.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

HEAD = struct.Struct("!II")
MAX_HEADER = 1 << 20


class FrameError(Exception):
    """A peer closed the pipe or sent a frame that breaks the protocol."""


def encode(header: dict[str, Any], payload: bytes | bytearray = b"") -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return HEAD.pack(len(h), len(payload)) + h + bytes(payload)


def write_frame(
    fd: int,
    header: dict[str, Any],
    payload: bytes | bytearray | memoryview = b"",
    deadline: float | None = None,
) -> None:
    """Write one frame; the payload is written from its own buffer (no copy is made of it). With a
    ``deadline``, writes go in PIPE_BUF pieces once the pipe is writable (never blocking past it), and
    TimeoutError is raised when the reader does not take the frame in time."""
    h = json.dumps(header, separators=(",", ":")).encode()
    for data in (memoryview(HEAD.pack(len(h), len(payload)) + h), memoryview(payload)):
        while data:
            if deadline is not None:
                _, ready, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError("the reader did not take the frame in time")
                data = data[os.write(fd, data[: select.PIPE_BUF]) :]
            else:
                data = data[os.write(fd, data) :]


def frame_complete(buf: bytes | bytearray | memoryview, max_payload: int) -> bool:
    """Whether ``buf`` holds exactly one whole frame within the caps (lengths only; nothing is parsed)."""
    if len(buf) < HEAD.size:
        return False
    hlen, plen = HEAD.unpack(bytes(buf[: HEAD.size]))
    return hlen <= MAX_HEADER and plen <= max_payload and len(buf) == HEAD.size + hlen + plen


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytearray:
    """Exactly ``n`` bytes from ``fd`` into a fresh bytearray; FrameError on EOF, TimeoutError when
    ``deadline`` (a ``time.monotonic()`` value) passes first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"no data in time ({got} of {n} bytes)")
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise FrameError(f"pipe closed after {got} of {n} bytes")
        got += k
    return buf


def read_frame(fd: int, max_payload: int, deadline: float | None = None) -> tuple[dict[str, Any], bytearray]:
    """One frame from ``fd``: (header, payload). FrameError on EOF or a frame over the caps; TimeoutError
    when the whole frame has not arrived by ``deadline``."""
    hlen, plen = HEAD.unpack(bytes(read_exact(fd, HEAD.size, deadline)))
    if hlen > MAX_HEADER or plen > max_payload:
        raise FrameError(f"frame too large (header {hlen} B, payload {plen} B)")
    header = parse_header(read_exact(fd, hlen, deadline))
    return header, read_exact(fd, plen, deadline)


def parse_header(raw: bytes | bytearray) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as e:
        raise FrameError(f"bad frame header ({e.__class__.__name__})") from e
    if not isinstance(header, dict):
        raise FrameError("frame header is not an object")
    return header


def split_frame(buf: bytes | bytearray, max_payload: int) -> tuple[dict[str, Any], bytes] | None:
    """Parse one complete frame held in ``buf``; None when ``buf`` is not exactly one valid frame."""
    if len(buf) < HEAD.size:
        return None
    hlen, plen = HEAD.unpack(bytes(buf[: HEAD.size]))
    if hlen > MAX_HEADER or plen > max_payload or len(buf) != HEAD.size + hlen + plen:
        return None
    try:
        header = parse_header(buf[HEAD.size : HEAD.size + hlen])
    except FrameError:
        return None
    return header, bytes(buf[HEAD.size + hlen :])
