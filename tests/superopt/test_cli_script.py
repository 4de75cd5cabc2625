"""``superopt script SCRIPT.py`` (issue 27): an unmodified lazy-Tensor script (the MLP block of
examples/mlp.py) runs through the kernel cache on cpu; its forward() is timed against
its numpy reference() and their outputs compared; misses tuned now are hits next time."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from superopt.cli import main
from superopt.commands.script import compare

MLP = Path(__file__).resolve().parents[2] / "examples" / "mlp.py"


def _script(capsys, *argv: str, status: int = 0) -> dict:
    assert main(["script", str(MLP), *argv, "--json", "-q"]) == status
    return json.loads(capsys.readouterr().out)


def test_the_mlp_script_misses_then_hits_and_matches_numpy(tmp_path, capsys):
    db = str(tmp_path / "k.sqlite")
    first = _script(capsys, "--cache", db, "--on-miss", "tune", "--budget", "0.3", "--repeat", "3")
    k = first["kernels"]
    assert k["distinct"] == 3 and k["hits"] == 0 and k["misses"] == 3 and k["tuned"] == 3   # 2 GEMMs + the softmax row
    assert k["launches"] == 3 * (1 + 1 + 3) and len(k["missed"]) == 3                    # script, warm-up, 3 timed calls
    ref = first["reference"]
    assert ref["library"] == "numpy" and ref["match"] and ref["rel_err"] < 1e-4
    assert first["time_s"] > 0 and ref["time_s"] > 0 and len(first["samples_s"]) == 3
    second = _script(capsys, "--cache", db, "--repeat", "3")
    k2 = second["kernels"]
    assert k2["hits"] == 3 and k2["misses"] == 0 and k2["by_source"] == {"cache": k2["launches"]}
    assert second["reference"]["match"] and second["reference"]["rel_err"] < 1e-4


def test_outputs_are_compared_per_dtype():
    rng = np.random.default_rng(0)
    want = rng.standard_normal((8, 16)).astype(np.float32)
    assert compare([want + 1e-7], [want])[0]
    off = want.copy()
    off[3, 4] += 1.0
    assert not compare([off], [want])[0] and not compare([want[:4]], [want])[0]
    assert not compare([np.full_like(want, np.nan)], [want])[0]
    assert compare([np.arange(5)], [np.arange(5)]) == (True, 0.0) and not compare([np.arange(5) + 1], [np.arange(5)])[0]


def test_bad_scripts_are_one_line_errors(tmp_path, capsys):
    d = _script(capsys, "--cache", str(tmp_path / "k.sqlite"), status=0)   # the default: hand rules on misses
    assert d["kernels"]["misses"] == 3 and d["kernels"]["by_source"] == {"hand": d["kernels"]["launches"]}
    assert main(["script", str(tmp_path / "none.py"), "--json"]) == 2
    assert "no such file" in json.loads(capsys.readouterr().out)["error"]
    assert main(["run", str(MLP), "--json"]) == 2
    assert "superopt script" in json.loads(capsys.readouterr().out)["error"]
    bad = tmp_path / "bad.py"
    bad.write_text("raise SystemExit(3)\n")
    assert main(["script", str(bad), "--json", "--cache", str(tmp_path / "k.sqlite")]) == 3
    assert json.loads(capsys.readouterr().out)["script_status"] == 3
