import json
import textwrap

import numpy as np
import pytest

import superopt
from superopt.capture import MANIFEST, read_manifest
from superopt.cli import main
from superopt.io import load_kernel
from superopt.ir.interpret import run_kernel
from superopt.ir.tensor import Tensor

rng = np.random.default_rng(0)


def _mlp(x: Tensor, w: Tensor) -> Tensor:
    return (x @ w).relu().sum(axis=1)


def test_capture_dedups_and_counts(tmp_path):
    xs = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(3)]
    w = rng.standard_normal((8, 6)).astype(np.float32)
    before = Tensor.runner
    with superopt.capture(tmp_path) as cap:
        outs = [_mlp(Tensor(x), Tensor(w)).numpy() for x in xs]
    assert Tensor.runner is before                      # hook removed on exit
    for x, o in zip(xs, outs):                          # results are still computed
        np.testing.assert_allclose(o, np.maximum(x @ w, 0).sum(1), rtol=1e-5)
    assert cap.launches == sum(len(_mlp(Tensor(x), Tensor(w)).schedule()) for x in xs[:1]) * 3
    assert set(cap.counts.values()) == {3} and len(cap.kernels) == cap.launches // 3
    m = read_manifest(tmp_path)
    assert {e["key"] for e in m["kernels"]} == set(cap.kernels)
    for e in m["kernels"]:
        k = load_kernel(tmp_path / e["file"])
        assert k.key == e["key"] and e["count"] == 3 and e["name"] == k.name


def test_saved_kernel_computes_the_same(tmp_path):
    x, w = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((7, 3)).astype(np.float32)
    with superopt.capture(tmp_path):
        (Tensor(x) @ Tensor(w)).numpy()
    [e] = read_manifest(tmp_path)["kernels"]
    k = load_kernel(tmp_path / e["file"])
    assert k.kind == "gemm"
    np.testing.assert_allclose(run_kernel(k, [x, w]).reshape(5, 3), x @ w, rtol=1e-5)


def test_record_only_mode_and_merge(tmp_path):
    x = Tensor.empty(64, 32, name="x_in")
    with superopt.capture(execute=False) as cap:
        Tensor._data["x_in"] = np.zeros((64, 32), np.float32)
        try:
            out = x.softmax(1).sum(0).numpy()          # max, sum of exp, column sums of the normalized rows
        finally:
            del Tensor._data["x_in"]
    assert out.shape == (32,) and len(cap.kernels) >= 2
    cap.save(tmp_path)
    cap.save(tmp_path)                                   # a second capture into the same dir adds counts
    assert all(e["count"] == 2 for e in read_manifest(tmp_path)["kernels"])


def test_nested_capture_sees_inner_kernels():
    with superopt.capture() as outer:
        with superopt.capture() as inner:
            (Tensor(np.ones((3, 3), np.float32)) + 1).numpy()
        (Tensor(np.ones((2, 2), np.float32)) * 2).numpy()
    assert inner.launches == 1 and outer.launches == 2


def test_bad_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "superopt.capture", "version": 1,
                                                 "kernels": [{"key": "a", "file": "../../etc/passwd", "count": 1}]}))
    with pytest.raises(ValueError, match="malformed"):
        read_manifest(tmp_path)


def test_cli_capture_script(tmp_path, capsys):
    script = tmp_path / "model.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from superopt import Tensor
        n = int(sys.argv[1])
        x = Tensor(np.ones((n, 16), np.float32))
        w = Tensor(np.ones((16, 16), np.float32))
        for _ in range(2):
            print((x @ w).gelu().layernorm().numpy().shape)
    """))
    out = tmp_path / "kernels"
    assert main(["capture", str(script), "-o", str(out), "4"]) == 0
    assert "(4, 16)" in capsys.readouterr().out
    m = read_manifest(out)
    assert m["source"] == "model.py" and m["kernels"] and all(e["count"] == 2 for e in m["kernels"])
    bad = tmp_path / "bad.py"
    bad.write_text("from superopt import Tensor\nimport numpy as np\n(Tensor(np.ones(3, np.float32))+1).numpy()\nraise RuntimeError('boom')\n")
    assert main(["capture", str(bad), "-o", str(tmp_path / "k2")]) == 1
    assert "boom" in capsys.readouterr().err
    assert read_manifest(tmp_path / "k2")["kernels"][0]["count"] == 1   # kernels before the failure are kept
    assert main(["capture", str(tmp_path / "missing.py"), "-o", str(out)]) == 2
