import json

import numpy as np
import pytest

from superopt import runtime
from superopt.cache import Cache, Entry, device_id
from superopt.ir.schedule import Level, Schedule, Split
from superopt.ir.tensor import Tensor, _runner_default

rng = np.random.default_rng(1)


def _model(x, w):
    return (Tensor(x) @ Tensor(w)).relu().softmax(1)


def _ref(x, w):
    h = np.maximum(x @ w, 0)
    e = np.exp(h - h.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_misses_run_hand_rules_on_the_backend(tmp_path):
    x, w = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 12)).astype(np.float32)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        got = _model(x, w).numpy()
        assert rt.stats["hand"] == len(_model(x, w).schedule()) and rt.stats["cache"] == 0
    assert Tensor.runner is _runner_default
    np.testing.assert_allclose(got, _ref(x, w), rtol=1e-4, atol=1e-6)


def test_hits_use_the_cached_schedule(tmp_path):
    x, w = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 12)).astype(np.float32)
    steps = _model(x, w).schedule()
    with Cache(tmp_path / "c.sqlite") as c:
        for st in steps:   # a legal, non-default schedule: every axis a plain loop
            k = st.kernel
            c.put(Entry(k.key, "cpu", device_id("cpu"), Schedule.naive(k).to_json(), "naive", True, 1e-6,
                        kernel=json.dumps(k.to_dict())))
        # an illegal cached schedule (wrong axis count) for a kernel not in this model is ignored safely
        c.put(Entry("f" * 32, "cpu", device_id("cpu"), Schedule(((Split(Level.LOOP, 4),),)).to_json(), "x", True, 1e-6))
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        got = _model(x, w).numpy()
        assert rt.stats["cache"] == len(steps) and rt.stats["hand"] == 0
        assert all(rt.schedule_for(st.kernel) == (Schedule.naive(st.kernel), "cache") for st in steps)
    np.testing.assert_allclose(got, _ref(x, w), rtol=1e-4, atol=1e-6)


def test_illegal_cached_schedule_falls_back_to_hand_rules(tmp_path):
    x = rng.standard_normal((8, 8)).astype(np.float32)
    [st] = (Tensor(x) + 1).schedule()
    k = st.kernel
    bad = Schedule(tuple((Split(Level.LOOP, 1),) for _ in k.axes))   # covers 1 < size: illegal
    with Cache(tmp_path / "c.sqlite") as c:
        c.put(Entry(k.key, "cpu", device_id("cpu"), bad.to_json(), "broken", True, 1e-9))
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        np.testing.assert_allclose((Tensor(x) + 1).numpy(), x + 1, rtol=1e-6)
        assert rt.stats["hand"] == 1


def test_use_and_reset(tmp_path):
    rt = runtime.use("cpu", cache=tmp_path / "c.sqlite")
    try:
        assert Tensor.runner is rt
        np.testing.assert_allclose((Tensor(np.ones(5, np.float32)) * 3).numpy(), np.full(5, 3.0))
    finally:
        runtime.reset()
    assert Tensor.runner is _runner_default
    with pytest.raises(ValueError, match="on_miss"):
        runtime.Runtime("cpu", cache=tmp_path / "c.sqlite", on_miss="guess")


def test_on_miss_tune_fills_the_cache(tmp_path):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite", on_miss="tune") as rt:
        np.testing.assert_allclose((Tensor(x) * 2).sum(1).numpy(), (x * 2).sum(1), rtol=1e-5)
        assert rt.stats["tuned"] == 1
    with Cache(tmp_path / "c.sqlite") as c:
        [e] = c.entries()
        assert e.verified and e.measured_s > 0 and e.device == device_id("cpu")
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:   # the next process finds it
        (Tensor(x) * 2).sum(1).numpy()
        assert rt.stats["cache"] == 1


def test_a_gemm_that_underfills_the_gpu_runs_split_along_k(tmp_path):
    """128x128 outputs are one 128x128 tile for 132 SMs: the model splits K = 2048 (ir/splitk.py),
    and the two kernels (here on the GPU emulator) give the GEMM + bias + relu."""
    x, w, b = (rng.uniform(-1, 1, sh).astype(np.float16) for sh in ((128, 2048), (2048, 128), (128,)))
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        got = ((Tensor(x) @ Tensor(w)) + Tensor(b)).relu().numpy().astype(np.float32)
        assert rt.stats["split_k"] == 1 and rt.stats["interpreter"] == 0   # both parts ran on the emulator
    want = np.maximum(x.astype(np.float32) @ w.astype(np.float32) + b.astype(np.float32), 0)
    np.testing.assert_allclose(got, want, rtol=5e-3, atol=2e-2)


def test_a_tuned_gemm_is_split_only_where_tuning_stored_its_parts(tmp_path):
    """A tuned entry keeps the GEMM whole; the parts' entries (tune stores them when the split
    measured faster) make the runtime split it, each part with its stored schedule."""
    from superopt.search.hand import hand_schedule
    from superopt.search.plan import split_k
    x, w = (rng.uniform(-1, 1, sh).astype(np.float16) for sh in ((128, 2048), (2048, 128)))
    out = Tensor(x) @ Tensor(w)
    (st,) = out.schedule()
    k = st.kernel
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        m, dev = rt.backend.machine, rt.device
    plan = split_k(k, m)
    with Cache(tmp_path / "c.sqlite") as c:
        c.put(Entry(k.key, "emu", dev, hand_schedule(k, m).to_json(), "z3", True, 1e-6, kernel=json.dumps(k.to_dict())))
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        whole = (Tensor(x) @ Tensor(w)).numpy()
        assert rt.stats["split_k"] == 0 and rt.stats["cache"] == 1
    with Cache(tmp_path / "c.sqlite") as c:
        for part in plan.steps:
            c.put(Entry(part.kernel.key, "emu", dev, part.schedule.to_json(), "split_k", True, 1e-6,
                        kernel=json.dumps(part.kernel.to_dict())))
    with runtime.using("emu", cache=tmp_path / "c.sqlite") as rt:
        split = (Tensor(x) @ Tensor(w)).numpy()
        assert rt.stats["split_k"] == 1 and rt.stats["cache"] == 2 and rt.stats["interpreter"] == 0
    want = x.astype(np.float32) @ w.astype(np.float32)
    for got in (whole, split): np.testing.assert_allclose(got.astype(np.float32), want, rtol=5e-3, atol=2e-2)


def test_no_split_on_a_cpu(tmp_path):
    x, w = rng.standard_normal((16, 512)).astype(np.float32), rng.standard_normal((512, 8)).astype(np.float32)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        np.testing.assert_allclose((Tensor(x) @ Tensor(w)).numpy(), x @ w, rtol=1e-4, atol=1e-4)
        assert rt.stats["split_k"] == 0


def test_a_schedule_that_fails_verification_never_returns_its_result(tmp_path):
    """A backend result that is wrong (one element, injected after the real run) fails the
    runtime's check before first use: the kernel falls back to the interpreter."""
    x, w = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 12)).astype(np.float32)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        real = rt.backend.run

        def wrong(c, ins, out):
            r = real(c, ins, out)
            if isinstance(r, np.ndarray): r.reshape(-1)[5] += 1.0
            return r
        rt.backend.run = wrong
        with pytest.warns(RuntimeWarning, match="failed verification"):
            got = _model(x, w).numpy()
        assert rt.stats["interpreter"] == len(_model(x, w).schedule())
    np.testing.assert_allclose(got, _ref(x, w), rtol=1e-4, atol=1e-6)


def test_tuning_stops_at_the_runtime_limit_and_a_failing_tuner_leaves_the_hand_rule(tmp_path):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        rt.on_miss, rt.tune_limit_s = "tune", 0.0          # nothing left to tune with: hand rules
        np.testing.assert_allclose((Tensor(x) * 2).sum(1).numpy(), (x * 2).sum(1), rtol=1e-5)
        assert rt.stats["tune_skipped"] == 1 and rt.stats["hand"] == 1 and rt.stats["tuned"] == 0

    def broken(k, backend, budget_s, method):
        raise RuntimeError("the solver is gone")
    rt = runtime.Runtime("cpu", cache=tmp_path / "c2.sqlite", on_miss="tune", tune=broken)
    try:
        from superopt.ir import context
        with context.use(runner=rt), pytest.warns(RuntimeWarning, match="the solver is gone"):
            got = (Tensor(x) + 3).numpy()
        assert rt.stats["hand"] == 1 and rt.tuning_s >= 0.0
    finally:
        rt.close()
    np.testing.assert_allclose(got, x + 3, rtol=1e-6)


def test_a_tuning_limit_is_the_engine_s_deadline(tmp_path):
    """Under tune_limit_s the engine's tuner gets a deadline: the run records how it kept it."""
    x = rng.standard_normal((8, 16)).astype(np.float32)
    with runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        rt.on_miss, rt.tune_limit_s = "tune", 30.0
        k = (Tensor(x) * 2).sum(1).schedule()[0].kernel
        r = rt._engine_tune(k, "cpu", 1.0, "z3")
        assert "budget" in r.extra and r.verified and rt.tuning_s == 0.0   # the limit is the runtime's, counted by _tune
        np.testing.assert_allclose((Tensor(x) * 2).sum(1).numpy(), (x * 2).sum(1), rtol=1e-5)
        assert rt.stats["tuned"] == 1 and 0.0 < rt.tuning_s < 30.0
