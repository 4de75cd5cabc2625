"""``superopt plan``: scripts and graph files, the three plans, errors."""
import re
import textwrap

import numpy as np
import pytest

from superopt.cli import main

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from superopt import Tensor
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    rng = np.random.default_rng(0)
    x, w = Tensor(rng.standard_normal((n, n), dtype=np.float32)), Tensor(rng.standard_normal((n, n), dtype=np.float32))
    RESULT = ((((x.sin() * 1.5).exp().sin() + 1.5).sqrt()) @ w).relu().numpy()
    np.save(sys.argv[2], RESULT) if len(sys.argv) > 2 else None
""")


def _rows(out: str) -> dict[str, list[str]]:
    return {m.group(1): m.group(2).split() for m in re.finditer(r"^  (unfused|default|planned)\s+(\d.*)$", out, re.M)}


def test_plan_script_prints_three_plans_and_kernels(tmp_path, capsys):
    s = tmp_path / "model.py"
    s.write_text(SCRIPT)
    assert main(["plan", str(s), "--timeout", "10", "--", "128"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {"unfused", "default", "planned"}
    # the chain is stored once, then read by the GEMM (the default rule also writes a contraction's operand)
    assert int(rows["planned"][0]) == 2 and int(rows["default"][0]) == 2 and int(rows["unfused"][0]) > 2
    assert "kernels (planned):" in out and "REDUCE(sum)" in out and "SQRT" in out


def test_plan_execute_runs_through_the_plan_and_graph_file_round_trips(tmp_path, capsys):
    s, g = tmp_path / "model.py", tmp_path / "g.json"
    s.write_text(SCRIPT)
    assert main(["plan", str(s), "--execute", "--timeout", "10", "--save-graph", str(g), "--kernels", "none",
                 "--", "32", str(tmp_path / "got.npy")]) == 0
    first = _rows(capsys.readouterr().out)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((32, 32), dtype=np.float32), rng.standard_normal((32, 32), dtype=np.float32)
    want = np.maximum(np.sqrt(np.sin(np.exp(np.sin(x.astype(np.float64)) * 1.5)) + 1.5) @ w, 0)
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), want, rtol=1e-4, atol=1e-5)
    assert main(["plan", str(g), "--timeout", "10", "--kernels", "none"]) == 0
    assert _rows(capsys.readouterr().out) == first


@pytest.mark.parametrize("content,msg", [("{}", "not a superopt graph"), ("nope", "g.json")])
def test_plan_bad_inputs_exit_2(tmp_path, capsys, content, msg):
    g = tmp_path / "g.json"
    g.write_text(content)
    assert main(["plan", str(g)]) == 2
    assert msg in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "missing.py")]) == 2
    assert main(["plan", str(g), "--machine", "nosuch"]) == 2
