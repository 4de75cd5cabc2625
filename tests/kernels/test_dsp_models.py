"""The DSP networks' numpy reference (kernels/dsp_models.py): deterministic, per-channel
weights, each layer's integer definition checked against an independent loop."""
from __future__ import annotations

import numpy as np
import pytest

from superopt.kernels import dsp_models as dm
from superopt.kernels.reference import requantize


def test_deterministic_and_per_channel():
    a, b = dm.mobilenet_v2(small=True), dm.mobilenet_v2(small=True)
    for la, lb in zip(a.layers, b.layers):
        if la.op == "conv":
            assert np.array_equal(la.q["w"], lb.q["w"])
            assert (np.abs(la.q["w"]).reshape(la.cout, -1).max(1) == 127).all()   # each channel's own scale
    xa, xb = dm.forward(a, dm.image(a)), dm.forward(b, dm.image(b))
    assert all(np.array_equal(p, q) for p, q in zip(xa, xb))
    assert [l.op for l in a.layers].count("add") == 1 and a.layers[-2].op == "pool"


def test_layers_match_direct_loops():
    net = dm.mobilenet_v2(small=True)
    x = dm.image(net)
    outs = dm.forward(net, x)
    i = next(i for i, l in enumerate(net.layers) if l.name == "b1_dw")   # depthwise stride 2, ReLU6
    ly, src = net.layers[i], outs[net.layers[i].src[0]].astype(np.int64)
    h, w, c = src.shape
    xp = np.pad(src, ((1, 1), (1, 1), (0, 0)))
    acc = np.zeros(net.shape(i), np.int64)
    for oy in range(acc.shape[0]):
        for ox in range(acc.shape[1]):
            acc[oy, ox] = (xp[2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3, :] * ly.q["w"][:, :, :, 0].transpose(1, 2, 0)).sum((0, 1))
    q = ly.q
    want = np.maximum(requantize(acc, q["bias"], q["mult"], q["pre"], q["post"]), 0)
    assert np.array_equal(outs[i], want) and outs[i].std() > 5          # alive, not all clamped
    a = next(i for i, l in enumerate(net.layers) if l.op == "add")
    la = net.layers[a]
    s = outs[la.src[0]].astype(np.int64) * la.q["ma"] + outs[la.src[1]].astype(np.int64) * la.q["mb"]
    assert np.array_equal(outs[a], np.clip((s + 64) >> 7, -128, 127))
    p = len(net.layers) - 2
    mean = outs[p - 1].astype(np.float64).mean((0, 1))
    assert np.abs(outs[p][0, 0] - mean).max() <= 1.0                      # an average, to one unit


def test_uint8_variant_and_errors():
    net = dm.mobilenet_v2(small=True, variant="uint8")
    outs = dm.forward(net, dm.image(net))
    assert all(o.dtype == np.uint8 for o in outs)
    relu = [i for i, l in enumerate(net.layers) if l.relu]
    assert all(net.zero_points[i] == 0 for i in relu) and outs[relu[0]].std() > 5
    with pytest.raises(ValueError): dm.forward(net, np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError): dm.pool_constants(256)
    assert dm.pool_constants(49) == (21400, 5)
