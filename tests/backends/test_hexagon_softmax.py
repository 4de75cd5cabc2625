"""Float kernels on the Hexagon backend: clang lowers float division to a call of
``__hexagon_divsf3`` (compiler-rt, not shipped for hexagon by Debian); the start-up provides
it. Checked bit for bit against numpy's float32 division (special values included), and a
softmax (the kernel that failed to link) compiles, runs under qemu and verifies."""
from __future__ import annotations

import numpy as np
import pytest

from superopt.backends.base import get
from superopt.backends.hexagon import tools
from superopt.kernels import Workload
from superopt.search.hand import hand_schedule
from superopt.search.machine import load
from superopt.verify import verify

pytestmark = pytest.mark.skipif(tools.find_tools() is None, reason=tools.missing_message())

DIV = r"""
static float a[N], b[N], o[N];
int so_main(void) {
  if (so_read_all(a, sizeof a) || so_read_all(b, sizeof b)) return 3;
  for (int i = 0; i < N; i++) { volatile float x = a[i], y = b[i]; o[i] = x / y; }
  return so_write_all(o, sizeof o);
}"""


def test_float_division_is_ieee_exact():
    n = 2048
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, size=(2, n), dtype=np.uint64).astype(np.uint32)
    a, b = bits[0].view(np.float32).copy(), bits[1].view(np.float32).copy()
    sp = np.array([0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 1.17549435e-38, 3.4e38, 1, 3, 7, 1e-40], np.float32)
    a[:sp.size ** 2], b[:sp.size ** 2] = np.repeat(sp, sp.size), np.tile(sp, sp.size)
    a[200:1000], b[200:1000] = rng.standard_normal((2, 800)).astype(np.float32)
    a[1000:1200], b[1000:1200] = 1e-38, rng.uniform(1, 1e6, 200).astype(np.float32)   # subnormal quotients
    exe = tools.compile_program(f"#define N {n}\n" + DIV)
    assert not isinstance(exe, tools.Failure), str(exe)
    out = tools.run_program(exe, a.tobytes() + b.tobytes(), 4 * n)
    assert not isinstance(out, tools.Failure), str(out)
    got = np.frombuffer(out, np.float32)
    with np.errstate(all="ignore"): want = a / b
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), np.nonzero(~same)[0][:10]


def test_softmax_links_runs_and_verifies():
    m = load("hexagon")
    k = Workload.make("softmax", M=8, N=96).kernel
    r = verify(k, hand_schedule(k, m), get("hexagon", m), seed=1)
    assert r.ok, r.reason


def test_special_values_follow_numpy_on_hexagon():
    """Issue 22 item 3 on the DSP's compiled code: a causal-masked softmax with NaN, +-inf,
    a fully masked row, -0.0, denormals and values past exp2's clamps equals numpy under qemu;
    so do exp2 and a max reduction of the same rows."""
    from superopt import Tensor
    from superopt.backends.base import Compiled
    from superopt.ir.kernelize import kernelize
    from superopt.ir.lower import lower
    from superopt.verify import poison
    from tests.backends.test_special_values import M, N, _np_softmax, _same, _special_rows
    m = load("hexagon")
    be = get("hexagon", m)
    x = _special_rows()
    t = Tensor.empty(M, N, name="x")
    with np.errstate(all="ignore"):
        cases = [(t.softmax(1), _np_softmax(x), 2e-4, 2e-6), (t.exp2(), np.exp2(x).astype(np.float64), 2e-6, 1e-44),
                 (t.max(1), x.astype(np.float64).max(1), 0, 0)]
    try:
        for tensor, want, rtol, atol in cases:
            k = kernelize(tensor.node)[0].kernel
            c = be.compile(lower(k, hand_schedule(k, m), m))
            assert isinstance(c, Compiled), c
            _same(be.run(c, [x.reshape(-1)], poison(k.output)), want, rtol, atol)
    finally:
        be.close()
