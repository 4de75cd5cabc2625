"""verify(): fresh inputs, poisoned outputs, tolerances, NaN never passes; an input set's
reference computed once and shared by every candidate checked on it."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.ir import dtypes
from superopt.ir.interpret import run_kernel
from superopt.ir.schedule import Level as L, Schedule, Split
import superopt.verify as V
from superopt.verify import SAMPLE_POINTS, InputSet, compare, poison, random_inputs, verify, verify_compiled


def _kernel(dtype=dtypes.float32, n=64):
    x, y = Tensor.empty(n, 32, dtype=dtype, name="x"), Tensor.empty(n, 32, dtype=dtype, name="y")
    return (x * y + x).schedule()[0].kernel


def test_inputs_are_fresh_and_never_zero():
    k = _kernel(dtypes.int8)
    a, b = random_inputs(k, np.random.default_rng()), random_inputs(k, np.random.default_rng())
    assert not np.array_equal(a[0], b[0])
    for d in (dtypes.float32, dtypes.float16, dtypes.bfloat16, dtypes.int8, dtypes.int32):
        arr = random_inputs(_kernel(d), np.random.default_rng(0))[0]
        assert np.all(dtypes.to_values(arr, d) != 0)


def test_poison_is_nan_or_sentinel():
    assert np.isnan(dtypes.to_values(poison(_kernel(dtypes.bfloat16).output), dtypes.bfloat16)).all()
    assert np.isnan(poison(_kernel().output)).all()
    assert (poison(_kernel(dtypes.int32).output) == -123456789).all()


@pytest.mark.parametrize("dtype", [dtypes.float32, dtypes.float16, dtypes.bfloat16, dtypes.int8, dtypes.int32])
def test_correct_schedules_pass(cpu_backend, dtype):
    k = _kernel(dtype)
    s = Schedule(((Split(L.GRID, 4), Split(L.LOOP, 16)), (Split(L.LOOP, 2), Split(L.UPCAST, 16))), vector=16, workers=2)
    r = verify(k, s, cpu_backend)
    assert r.ok, r
    assert r.checked == 64 * 32


def test_unwritten_outputs_fail():
    k = _kernel()
    rng = np.random.default_rng(0)
    ins = random_inputs(k, rng)
    got = run_kernel(k, ins).reshape(-1).copy()
    assert compare(k, got, ins, rng).ok
    got[5] = np.nan  # one element never written
    r = compare(k, got, ins, rng)
    assert not r.ok and r.failure_kind == "wrong" and "NaN" in r.reason


def test_tolerance_per_dtype():
    rng = np.random.default_rng(0)
    k32, k16 = _kernel(), _kernel(dtypes.float16)
    ins = random_inputs(k32, rng)
    ref = run_kernel(k32, ins).reshape(-1).astype(np.float64)
    assert compare(k32, (ref * (1 + 1e-6)).astype(np.float32), ins, rng).ok
    assert not compare(k32, (ref * (1 + 1e-2)).astype(np.float32), ins, rng).ok
    ins16 = random_inputs(k16, rng)
    ref16 = run_kernel(k16, ins16).reshape(-1).astype(np.float64)
    assert compare(k16, (ref16 * (1 + 2e-3)).astype(np.float16), ins16, rng).ok  # fp16: a few ulps
    # a wgmma pipeline on the H100 summed wrong by 1.6e-2 and passed the fp16 tolerance of the time
    assert not compare(k16, (ref16 * (1 + 1.6e-2)).astype(np.float16), ins16, rng).ok
    assert not compare(k16, (ref16 * 1.2).astype(np.float16), ins16, rng).ok


def test_integers_must_be_exact():
    rng = np.random.default_rng(0)
    k = _kernel(dtypes.int32)
    ins = random_inputs(k, rng)
    got = run_kernel(k, ins).reshape(-1).copy()
    assert compare(k, got, ins, rng).ok
    got[3] += 1
    r = compare(k, got, ins, rng)
    assert not r.ok and "differ" in r.reason


def test_large_gemm_outputs_are_checked_whole(cpu_backend):
    """(Sampled 4096 points before issue 22; the fast reference now covers all of it.)"""
    k = (Tensor.empty(512, 256, name="a") @ Tensor.empty(256, 256, name="b")).schedule()[0].kernel
    r = verify(k, Schedule(((Split(L.GRID, 128), Split(L.UPCAST, 4)), (Split(L.LOOP, 16), Split(L.UPCAST, 16)),
                            (Split(L.LOOP, 256),)), vector=16, workers=2), cpu_backend)
    assert r.ok and r.checked == k.out_points > SAMPLE_POINTS


def test_illegal_schedule_is_a_structured_failure(cpu_backend):
    k = _kernel()
    r = verify(k, Schedule(((Split(L.LOOP, 8),), (Split(L.LOOP, 32),))), cpu_backend)
    assert not r.ok and r.failure_kind == "illegal" and "cover" in r.reason


def _counted(monkeypatch) -> list:
    """Record every reference evaluation made by superopt.verify (True: a sampled one)."""
    calls, real = [], V.run_kernel

    def counted(*a, **kw):
        calls.append(kw.get("points") is not None)
        return real(*a, **kw)
    monkeypatch.setattr(V, "run_kernel", counted)
    return calls


def _schedules():
    return [Schedule(((Split(L.LOOP, 64),), (Split(L.LOOP, 32),))),
            Schedule(((Split(L.GRID, 4), Split(L.LOOP, 16)), (Split(L.LOOP, 2), Split(L.UPCAST, 16))), vector=16, workers=2),
            Schedule(((Split(L.GRID, 8), Split(L.LOOP, 8)), (Split(L.UPCAST, 32),)), workers=2)]


def test_the_reference_is_computed_once_for_several_candidates(cpu_backend, monkeypatch):
    from superopt.ir.lower import lower
    calls = _counted(monkeypatch)
    k = _kernel()
    ins = random_inputs(k, np.random.default_rng(1))
    for s in _schedules():
        r = verify_compiled(k, cpu_backend.compile(lower(k, s, cpu_backend.machine)), cpu_backend,
                            np.random.default_rng(), ins)
        assert r.ok and r.checked == 64 * 32, r
    once = [False] * (1 + len(V.special_sets(k)))      # the random set and each special set: once each
    assert calls == once
    # a plain list of the same arrays has no reference to share: computed per check
    plain = list(ins)
    for got in (run_kernel(k, ins), run_kernel(k, ins)):
        assert compare(k, got.reshape(-1), plain, np.random.default_rng()).ok
    assert calls == once + [False, False]


def test_a_wrong_candidate_is_rejected_by_a_shared_reference(monkeypatch):
    calls = _counted(monkeypatch)
    k = _kernel()
    ins = random_inputs(k, np.random.default_rng(2))
    good = run_kernel(k, ins).reshape(-1).copy()
    off = good.copy()
    off[7] += 1.0
    unwritten = good.copy()
    unwritten[9] = np.nan
    assert compare(k, good, ins, None).ok
    r1, r2 = compare(k, off, ins, None), compare(k, unwritten, ins, None)
    assert not r1.ok and "relative error" in r1.reason
    assert not r2.ok and "NaN" in r2.reason
    assert compare(k, good, ins, None).ok
    assert len(calls) == 1


def test_a_sampled_reference_keeps_its_points_and_matches_the_whole_output(monkeypatch):
    """Large outputs: SAMPLE_POINTS random points drawn once per input set; their reference
    values are the whole reference's at those elements (where no fast whole reference
    exists: large row kernels; forced off here)."""
    monkeypatch.setattr(V, "whole_output", lambda k, ins: None)
    k = (Tensor.empty(512, 256, name="a") @ Tensor.empty(256, 256, name="b")).schedule()[0].kernel
    ins = random_inputs(k, np.random.default_rng(3))
    whole = run_kernel(k, ins).reshape(-1).astype(np.float64)
    calls = _counted(monkeypatch)
    ref = ins.reference(k)
    assert ins.reference(k) is ref and calls == [True]
    assert len(ref.store) == SAMPLE_POINTS == len(np.unique(ref.store))
    np.testing.assert_allclose(ref.values, whole[ref.store], rtol=1e-6)
    got = whole.astype(np.float32)
    assert compare(k, got, ins, None).ok
    got[ref.store[100]] *= 1.5          # wrong on a checked element
    assert not compare(k, got, ins, None).ok
    assert calls == [True]


def test_input_sets_are_read_only():
    ins = random_inputs(_kernel(), np.random.default_rng(4))
    assert isinstance(ins, InputSet) and isinstance(ins, list) and len(ins) == 2
    with pytest.raises(ValueError):
        ins[0][0, 0] = 0.5                 # a changed input would make the shared reference stale


@pytest.mark.parametrize("dtype", [dtypes.float32, dtypes.float16, dtypes.bfloat16, dtypes.int8, dtypes.uint8,
                                   dtypes.int32, dtypes.bool_])
def test_inputs_drawn_in_chunks_keep_their_range(monkeypatch, dtype):
    """Drawn a chunk at a time (a chunk size that does not divide the buffer): the same
    values as drawn in one piece, and the same ranges."""
    k = _kernel(dtype, n=37)
    whole = random_inputs(k, np.random.default_rng(6))
    monkeypatch.setattr(V, "CHUNK", 100)
    chunked = random_inputs(k, np.random.default_rng(6))
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape == (37, 32) and a.dtype == b.dtype == dtype.np
        np.testing.assert_array_equal(a, b)
        v = dtypes.to_values(b, dtype).astype(np.float64)
        if dtype.is_float:
            assert np.all((np.abs(v) >= 0.099) & (np.abs(v) <= 1.0)) and (v < 0).any() and (v > 0).any()
        elif dtype is dtypes.bool_:
            assert v.reshape(-1)[0] == 1
        else:
            assert np.all(v != 0) and np.all(np.abs(v) <= 8)
