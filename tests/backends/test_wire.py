"""The worker wire format: arrays round-trip exactly and nothing is unpickled."""
import io

import numpy as np

from superopt.backends.wire import pack_arrays, recv, send, unpack_arrays


def test_arrays_round_trip_with_dtype_shape_and_are_writable():
    arrs = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([True, False]),
            np.arange(4, dtype=np.uint16), np.zeros((0,), np.int8)]
    f = io.BytesIO()
    meta, data = pack_arrays(arrs)
    send(f, {"op": "run", "arrays": meta}, data)
    f.seek(0)
    hdr, blobs = recv(f)
    got = unpack_arrays(hdr["arrays"], blobs)
    assert hdr["op"] == "run" and len(got) == len(arrs)
    for a, b in zip(arrs, got):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        b[...] = 0  # the worker writes its output in place
