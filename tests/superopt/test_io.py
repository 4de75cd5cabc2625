"""Safe kernel files: round trips, the shipped examples, and every way a file can be bad."""
from __future__ import annotations

import builtins
import json
import os
import pickle
from pathlib import Path

import pytest

from superopt.io import KernelFileError, load_kernel, load_steps, save_kernel
from superopt.ir.kernel import Kernel
from superopt.kernels import Workload

EXAMPLES = Path(__file__).resolve().parents[2] / "kernels" / "examples"


@pytest.fixture(scope="module")
def softmax() -> Workload:
    from superopt.ir.kernelize import ROW_MAX
    return Workload.make("softmax", M=2, N=2 * ROW_MAX)   # rows too long for one row kernel: 3 kernels


@pytest.mark.parametrize("ext", ["pkl", "json"])
def test_kernel_and_program_round_trip(tmp_path, softmax, ext):
    k = softmax.kernel
    assert load_kernel(save_kernel(k, tmp_path / f"k.{ext}")).key == k.key
    p = save_kernel(softmax.steps, tmp_path / f"p.{ext}")
    steps, main = load_steps(p)
    assert main == softmax.main == 2
    assert [(s.kernel.key, s.inputs, s.output) for s in steps] == [(s.kernel.key, s.inputs, s.output) for s in softmax.steps]
    assert load_kernel(p).key == k.key and load_kernel(p, index=0).key == softmax.steps[0].kernel.key
    with pytest.raises(KernelFileError, match="no step 5"):
        load_kernel(p, index=5)


def test_examples_load_and_twins_agree():
    m = load_kernel(EXAMPLES / "matmul_512.pkl")
    assert m.kind == "gemm" and [a.size for a in m.axes] == [512, 512, 512] and m.flops == 2 * 512 ** 3
    assert load_kernel(EXAMPLES / "matmul_512.json").key == m.key
    s = load_kernel(EXAMPLES / "softmax_1024.pkl")
    assert s.kind == "row" and len(s.reduces) == 2 and [a.size for a in s.axes] == [1024, 1024]
    assert load_kernel(EXAMPLES / "softmax_1024.json").key == s.key


def test_examples_are_what_make_py_writes(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES.parents[1] / "scripts" / "make_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    for f in ("matmul_512.pkl", "matmul_512.json", "softmax_1024.pkl", "softmax_1024.json"):
        assert (tmp_path / f).read_bytes() == (EXAMPLES / f).read_bytes(), f


class _System:
    def __init__(self, marker: Path): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path): self.marker = marker
    def __reduce__(self): return (builtins.eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload", [_System, _Eval])
@pytest.mark.parametrize("where", ["top", "envelope", "inside_kernel_args"])
def test_malicious_pickle_never_runs(tmp_path, payload, where):
    marker = tmp_path / "pwned"
    evil = payload(marker)
    obj = {"top": evil, "envelope": {"format": "superopt.kernel", "version": 1, "kernel": evil},
           "inside_kernel_args": {"format": "superopt.kernel", "version": 1, "kernel": [evil]}}[where]
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(KernelFileError, match="refusing to load"):
        load_kernel(f)
    assert not marker.exists()


def test_protocol0_pickle_is_rejected_unread(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "old.pkl"
    f.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(KernelFileError, match="not a superopt kernel file"):
        load_kernel(f)
    assert not marker.exists()


def test_allowed_classes_with_wrong_arguments(tmp_path):
    from superopt.ir.node import Node

    class BadNode:
        def __reduce__(self): return (Node, ("add", "float32", (), None))
    f = tmp_path / "bad.pkl"
    f.write_bytes(pickle.dumps({"format": "superopt.kernel", "version": 1, "kernel": BadNode()}, protocol=4))
    with pytest.raises(KernelFileError, match="malformed IR node"):
        load_kernel(f)


@pytest.mark.parametrize("ext", ["pkl", "json"])
def test_every_truncation_is_a_clear_error(tmp_path, softmax, ext):
    data = save_kernel(softmax.steps, tmp_path / f"p.{ext}").read_bytes()
    cut = tmp_path / f"cut.{ext}"
    for n in list(range(0, len(data), max(1, len(data) // 60))) + [len(data) - 1]:
        cut.write_bytes(data[:n])
        with pytest.raises(KernelFileError):
            load_steps(cut)


@pytest.mark.parametrize("content,match", [
    (pickle.dumps([1, 2, 3], protocol=4), "holds a list"),
    (pickle.dumps({"a": 1}, protocol=4), "no format tag"),
    (pickle.dumps({"format": "superopt.kernel", "version": 1, "kernel": "x"}, protocol=4), "expected a Kernel"),
    (pickle.dumps({"format": "other", "version": 1}, protocol=4), "unknown file format"),
    (b"[1, 2]", "not a superopt kernel file"),
    (b"{\"format\": \"superopt.kernel\"", "not valid JSON"),
    (b"hello world", "neither a pickle nor JSON"),
    (b"", "empty"),
])
def test_wrong_content(tmp_path, content, match):
    f = tmp_path / "x.pkl"
    f.write_bytes(content)
    with pytest.raises(KernelFileError, match=match):
        load_kernel(f)


def test_unknown_versions(tmp_path, softmax):
    d = softmax.kernel.to_dict()
    d["version"] = 99
    (tmp_path / "k.json").write_text(json.dumps(d))
    with pytest.raises(KernelFileError, match="unsupported kernel file version 99"):
        load_kernel(tmp_path / "k.json")
    (tmp_path / "k.pkl").write_bytes(pickle.dumps({"format": "superopt.kernel", "version": 2, "kernel": softmax.kernel}, protocol=4))
    with pytest.raises(KernelFileError, match="version 2"):
        load_kernel(tmp_path / "k.pkl")
    p = json.loads(save_kernel(softmax.steps, tmp_path / "p.json").read_text())
    p["version"] = "1"
    (tmp_path / "p.json").write_text(json.dumps(p))
    with pytest.raises(KernelFileError, match="unsupported program file version"):
        load_kernel(tmp_path / "p.json")


def test_malformed_json_kernels(tmp_path, softmax):
    d = softmax.kernel.to_dict()
    d["nodes"][0][2] = [len(d["nodes"])]  # a source that is not an earlier node
    (tmp_path / "k.json").write_text(json.dumps(d))
    with pytest.raises(KernelFileError, match="malformed kernel node list"):
        load_kernel(tmp_path / "k.json")
    d = softmax.kernel.to_dict()
    d["axes"][0][0] = 3  # axis size disagrees with the index variables
    (tmp_path / "k.json").write_text(json.dumps(d))
    with pytest.raises(KernelFileError, match="invalid kernel"):
        load_kernel(tmp_path / "k.json")


def test_missing_file_directory_and_extension(tmp_path, softmax):
    with pytest.raises(KernelFileError, match="no such file"):
        load_kernel(tmp_path / "nope.pkl")
    with pytest.raises(KernelFileError, match="directory"):
        load_kernel(tmp_path)
    with pytest.raises(ValueError, match="extension"):
        save_kernel(softmax.kernel, tmp_path / "k.txt")


def test_kernel_file_error_is_one_line(tmp_path):
    f = tmp_path / "x.pkl"
    f.write_bytes(b"\x80\x04" + b"\xff" * 50)
    with pytest.raises(KernelFileError) as e:
        load_kernel(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_loaded_kernel_is_a_fresh_object(tmp_path, softmax):
    k = load_kernel(save_kernel(softmax.kernel, tmp_path / "k.pkl"))
    assert type(k) is Kernel and k == softmax.kernel and k.describe() == softmax.kernel.describe()
