"""Index-generating ops (arange, one-hot, gather, an index-hash dropout mask) are computed
inside the kernels that read them: no range, mask or one-hot buffer is ever written."""
from __future__ import annotations

import numpy as np
import pytest

from superopt import Tensor
from superopt.backends.base import get
from superopt.ir import dtypes as dt
from superopt.ir.kernelize import kernelize
from superopt.search import fusion
from superopt.search.hand import hand_schedule
from superopt.search.machine import H100
from superopt.verify import verify

RNG = np.random.default_rng(0)
V, D, B, S = 50, 16, 3, 7
TABLE = RNG.standard_normal((V, D)).astype(np.float32)
IDS = RNG.integers(0, V, (B, S)).astype(np.int32)


def test_arange_and_one_hot():
    np.testing.assert_array_equal(Tensor.arange(6).numpy(), np.arange(6))
    np.testing.assert_array_equal(Tensor.arange(5, dt.float32).numpy(), np.arange(5, dtype=np.float32))
    oh = Tensor(IDS, name="ids").one_hot(V)
    np.testing.assert_array_equal(oh.numpy(), (IDS[..., None] == np.arange(V)).astype(np.float32))
    (step,) = kernelize(oh.node)
    assert step.inputs == ("ids",)                                       # the range is never a buffer


def test_embedding_lookup_plus_dropout_is_one_kernel_reading_ids_and_table():
    ids = IDS.copy()
    ids[0, 0], ids[1, 2] = V + 3, -1                                   # outside the table: zeros
    table, idt = Tensor(TABLE, name="table"), Tensor(ids, name="ids")
    out = table.embedding(idt).dropout(0.25, seed=7)
    (step,) = kernelize(out.node)                                       # gather, hash mask, scale: one kernel
    assert sorted(step.inputs) == ["ids", "table"]
    assert step.kernel.min_bytes == ids.nbytes + 2 * B * S * D * 4     # the gathered rows, not the table; the output
    keep = Tensor.dropout_mask((B, S, D), 0.25, seed=7).numpy()
    rows = np.where(((ids >= 0) & (ids < V))[..., None], TABLE[np.clip(ids, 0, V - 1)], 0.0)
    np.testing.assert_allclose(out.numpy(), np.where(keep, rows / 0.75, 0.0), rtol=1e-6)


def test_dropout_mask_is_deterministic_and_keeps_about_one_minus_p():
    m = Tensor.dropout_mask((256, 256), 0.1, seed=1).numpy()
    assert m.dtype == np.bool_ and abs(m.mean() - 0.9) < 0.01
    assert (m == Tensor.dropout_mask((256, 256), 0.1, seed=1).numpy()).all()
    assert (m != Tensor.dropout_mask((256, 256), 0.1, seed=2).numpy()).mean() > 0.1
    assert Tensor.dropout_mask((64,), 0.0).numpy().all()


def test_bad_index_ops_are_refused():
    with pytest.raises(ValueError, match="positive"):
        Tensor.arange(0)
    with pytest.raises(ValueError, match="integers"):
        Tensor(TABLE).embedding(Tensor(TABLE))
    with pytest.raises(ValueError, match="probability"):
        Tensor.dropout_mask((4,), 1.0)


@pytest.mark.parametrize("backend", ["cpu", "emu"])
def test_index_kernels_verify_on_backends(backend):
    be = get(backend)
    table, idt = Tensor.empty(V, D, name="table"), Tensor.empty(B, S, dtype=dt.int32, name="ids")
    for t in (table.embedding(idt).dropout(0.5, seed=3), idt.one_hot(V), Tensor.dropout_mask((B, S, D), 0.3).cast(dt.float32)):
        (step,) = kernelize(t.node)
        assert verify(step.kernel, hand_schedule(step.kernel, be.machine), be, seed=5).ok


def test_fusion_plan_never_materializes_index_ops():
    table, idt = Tensor.empty(V, D, name="table"), Tensor.empty(B, S, dtype=dt.int32, name="ids")
    out = (table.embedding(idt).dropout(0.1) * Tensor.arange(D, dt.float32)).layernorm()
    p = fusion.plan(out.node, H100, timeout_s=10)
    assert len(p.steps) == 1 and p.cost.kernels == 1 and sorted(p.steps[0].inputs) == ["ids", "table"]
    assert p.cost.time_s <= p.unfused.time_s
