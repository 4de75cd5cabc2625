"""HexagonBackend.time counts qemu's packets (c20), instructions (c21) and HVX
instructions (c22) around the kernel call; ``superopt tune --backend hexagon`` on an int8
kernel verifies and reports packets and MACs a packet. Skips without clang/ld.lld/qemu."""
from __future__ import annotations

import json

import numpy as np
import pytest

from superopt.backends.base import Failure, Timing, get
from superopt.backends.hexagon import rules, tools
from superopt.ir.lower import lower
from superopt.kernels import Workload
from superopt.search.machine import load

pytestmark = pytest.mark.skipif(tools.find_tools() is None, reason=tools.missing_message())

M = load("hexagon")


def test_time_counts_packets_deterministically():
    w = Workload.make("matmul", M=32, N=64, K=64, dtype="int8")
    k = w.kernel
    be = get("hexagon", M)
    c = be.compile(lower(k, rules.hand(k, M), M))
    assert not isinstance(c, Failure), str(c)
    ins = w.random_inputs(0)
    outs, times = [], []
    for _ in range(2):
        out = np.zeros(k.output.size, k.output.dtype.np)
        t = be.time(c, ins, out)
        assert isinstance(t, Timing), str(t)
        outs.append(out.copy()); times.append(t)   # noqa: E702
    a, b = times
    assert a.counters == b.counters and a.median_s == b.median_s          # deterministic
    n = a.counters
    assert n["packets"] > 0 and n["instructions"] >= n["packets"] and 0 < n["hvx_instructions"] <= n["instructions"]
    assert n["stall_packets"] == 0                                          # the stated stall model: none
    assert a.median_s == pytest.approx(n["packets"] / M.notes["clock_hz"])
    assert np.array_equal(outs[0], outs[1])
    # the output written by a timed run is the kernel's result
    assert w.matches(outs[0].reshape(w.reference(ins).shape), w.reference(ins))


def test_tune_int8_hexagon_json(tmp_path, capsys):
    from superopt.cli import main
    f = tmp_path / "mm8.pkl"
    assert main(["new", "matmul", "M=32", "N=64", "K=64", "dtype=int8", "-o", str(f)]) in (0, None)
    capsys.readouterr()
    rc = main(["tune", str(f), "--backend", "hexagon", "--json", "--no-cache"])
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and d["verified"], d.get("reason")
    assert d["packets"] > 0 and d["time_s"] == pytest.approx(d["packets"] / M.notes["clock_hz"])
    assert d["macs_per_packet"] == pytest.approx(32 * 64 * 64 / d["packets"])
    assert d["macs_per_packet"] <= 2 * 128   # at most two multipliers x 128 byte MACs a packet
