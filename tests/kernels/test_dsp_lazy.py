"""The DSP network as a lazy Tensor graph (what ``superopt capture`` records) computes the
numpy reference of kernels/dsp_models.py bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from superopt.kernels import dsp_models as dm


@pytest.mark.parametrize("name", ["mobilenet_v2", "openpilot_stack"])
def test_lazy_graph_is_the_reference(name):
    net = dm.NETS[name](small=True)
    x = dm.image(net)
    got = dm.lazy(net, x).numpy().reshape(net.shape(len(net.layers) - 1))
    want = dm.forward(net, x)[-1]
    assert got.dtype == np.int8 and np.array_equal(got, want)
    assert np.unique(want).size > 4                     # not a saturated or vanished output


def test_lazy_graph_refuses_uint8():
    net = dm.mobilenet_v2(small=True, variant="uint8")
    with pytest.raises(ValueError): dm.lazy(net, dm.image(net))
