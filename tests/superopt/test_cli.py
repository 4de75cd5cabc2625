"""``superopt new`` and ``superopt show``: files written and printed, clear one-line errors,
and a hostile pickle that never runs."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from superopt.ir.kernelize import ROW_MAX
from superopt.cli import main
from superopt.io import load_kernel, load_steps
from superopt.kernels import KINDS


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse exits for --help and usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_new_help_lists_every_kind_with_defaults(capsys):
    rc, out, _ = _run(capsys, "new", "--help")
    assert rc == 0
    for k in KINDS.values():
        assert k.usage() in out
    assert "conv2d N=1 C=64 H=56 W=56 K=64 R=3 S=3 stride=1 pad=1 groups=1 layout=nchw dtype=float32" in out


@pytest.mark.parametrize("argv,kind", [
    (["matmul", "M=16", "N=8", "K=4"], "gemm"),
    (["bmm", "B=2", "M=4", "N=4", "K=8", "b_layout=nk", "dtype=fp16"], "gemm"),
    (["conv2d", "N=1", "C=4", "H=6", "W=6", "K=4", "stride=2", "groups=2", "layout=nhwc", "dtype=f16"], "conv"),
    (["rowsum", "M=4", "N=32"], "reduce"),
    (["softmax", "M=4", "N=32"], "row"),
    (["layernorm", "M=4", "N=32"], "row"),
    (["fma", "n=100"], "elementwise"),
    (["transpose", "M=3", "N=5"], "elementwise"),
])
@pytest.mark.parametrize("ext", ["pkl", "json"])
def test_new_then_show(tmp_path, capsys, argv, kind, ext):
    f = tmp_path / f"k.{ext}"
    rc, out, err = _run(capsys, "new", *argv, "-o", str(f))
    assert rc == 0 and err == "" and f"wrote {f}" in out
    assert load_kernel(f).kind == kind
    rc, out, err = _run(capsys, "show", str(f))
    assert rc == 0 and err == ""
    for word in ("axes:", "index:", "flops:", "min bytes:", "intensity:"):
        assert word in out


def test_multi_kernel_program_and_main_only(tmp_path, capsys):
    f, g = tmp_path / "s.pkl", tmp_path / "m.pkl"
    n = f"N={2 * ROW_MAX}"   # rows too long for one row kernel: max, sum of exp, normalize
    assert _run(capsys, "new", "softmax", "M=2", n, "-o", str(f))[0] == 0
    steps, main_i = load_steps(f)
    assert len(steps) == 3 and main_i == 2
    rc, out, _ = _run(capsys, "show", str(f))
    assert rc == 0 and "program: 3 kernels, main kernel: step 2" in out and out.count("kernel ") >= 3
    rc, out, _ = _run(capsys, "show", str(f), "--step", "0")
    assert rc == 0 and "max[r1]" in out
    assert _run(capsys, "new", "softmax", "M=2", n, "--main-only", "-o", str(g))[0] == 0
    assert len(load_steps(g)[0]) == 1 and load_kernel(g).key == steps[2].kernel.key


def test_new_default_output_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run(capsys, "new", "fma", "n=64")[0] == 0
    assert (tmp_path / "fma_float32.pkl").exists()


@pytest.mark.parametrize("argv,msg", [
    (["new", "nope"], "unknown kind 'nope'"),
    (["new", "matmul", "Q=1"], "unknown parameter 'Q'"),
    (["new", "matmul", "M=x"], "M=x: not an integer"),
    (["new", "matmul", "M=-3"], "must be >= 1"),
    (["new", "conv2d", "layout=abc"], "must be one of nchw, nhwc"),
    (["new", "matmul", "dtype=float64"], "not a dtype"),
    (["new", "conv2d", "C=3", "groups=2"], "do not fit"),
    (["new", "matmul", "-o", "out.txt"], "must end in .pkl or .json"),
])
def test_new_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, msg):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(capsys, *argv)
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


class _Payload:
    def __init__(self, marker: Path): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_show_hostile_pickle_never_runs_the_payload(tmp_path):
    """End to end through the installed command line, as a user would run it."""
    marker = tmp_path / "marker"
    evil = tmp_path / "kernel.pkl"
    evil.write_bytes(pickle.dumps({"format": "superopt.kernel", "version": 1, "kernel": _Payload(marker)}))
    r = subprocess.run([sys.executable, "-m", "superopt", "show", str(evil)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to load posix.system" in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert not marker.exists()


@pytest.mark.parametrize("content,msg", [
    (None, "truncated"),
    (pickle.dumps(("not", "a", "kernel")), "holds a tuple"),
    (pickle.dumps({"format": "superopt.kernel", "version": 7, "kernel": None}), "unsupported kernel file version 7"),
    (b"\x00\x01garbage", "not a superopt kernel file"),
])
def test_show_bad_files_exit_2_with_one_line(tmp_path, capsys, content, msg):
    f = tmp_path / "bad.pkl"
    if content is None:  # a real kernel file cut short
        good = (Path(__file__).resolve().parents[2] / "kernels" / "examples" / "matmul_512.pkl").read_bytes()
        content = good[: len(good) // 2]
    f.write_bytes(content)
    rc, out, err = _run(capsys, "show", str(f))
    assert rc == 2 and out == "" and msg in err and len(err.strip().splitlines()) == 1


def test_show_missing_file(capsys, tmp_path):
    rc, _, err = _run(capsys, "show", str(tmp_path / "missing.json"))
    assert rc == 2 and "no such file" in err
