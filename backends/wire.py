"""The parent <-> worker wire format shared by the backends' worker processes.

It carries no code: each message is a length-prefixed JSON header followed by raw byte
blobs whose sizes the header lists. Arrays travel as blobs with their dtype and shape in
the header, so nothing on either side is ever unpickled.
"""
from __future__ import annotations

import json
import struct
from typing import BinaryIO, Sequence

import numpy as np


def send(f: BinaryIO, header: dict, blobs: Sequence[bytes | memoryview] = ()) -> None:
    header = dict(header, blobs=[len(b) for b in blobs])
    h = json.dumps(header).encode()
    f.write(struct.pack("<Q", len(h)) + h)
    for b in blobs: f.write(b)
    f.flush()


def read_exact(f: BinaryIO, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        c = f.read(n - got)
        if not c: raise EOFError("peer closed the pipe")
        chunks.append(c); got += len(c)  # noqa: E702
    return b"".join(chunks)


def recv(f: BinaryIO) -> tuple[dict, list[bytes]]:
    n, = struct.unpack("<Q", read_exact(f, 8))
    header = json.loads(read_exact(f, n))
    return header, [read_exact(f, k) for k in header.get("blobs", [])]


def pack_arrays(arrays: Sequence[np.ndarray]) -> tuple[list[dict], list[memoryview]]:
    """(dtype/shape of each array, its bytes) for ``send``."""
    arrs = [np.ascontiguousarray(a) for a in arrays]
    return [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrs], [memoryview(a).cast("B") for a in arrs]


def unpack_arrays(meta: Sequence[dict], blobs: Sequence[bytes]) -> list[np.ndarray]:
    """Writable arrays from ``pack_arrays``' description and the received bytes."""
    return [np.frombuffer(bytearray(b), dtype=np.dtype(m["dtype"])).reshape(m["shape"]) for m, b in zip(meta, blobs)]
