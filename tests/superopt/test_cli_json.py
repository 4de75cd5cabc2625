"""--version, JSON errors, show --json, plan SCRIPT --json not reaching the script."""
import json

from superopt.cli import main


def test_version_and_json_errors(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("superopt ")
    assert main(["show", "missing.json", "--json"]) == 2
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "input" and d["command"] == "show" and "missing.json" in d["error"]
    assert main(["show", "--bogus", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["kind"] == "usage"


def test_show_json(tmp_path, capsys):
    f = tmp_path / "k.json"
    assert main(["new", "matmul", "M=16", "N=8", "K=4", "-o", str(f)]) == 0
    capsys.readouterr()
    assert main(["show", str(f), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["flops"] == 2 * 16 * 8 * 4 and d["steps"][0]["kind"] == "gemm"


def test_plan_json_flag_is_superopts(tmp_path, capsys):
    s = tmp_path / "s.py"
    s.write_text("import sys\nimport numpy as np\nfrom superopt import Tensor\nprint('ARGS', sys.argv[1:])\n"
                 "(Tensor(np.ones((8, 8), np.float32)).exp() + 1).sum().numpy()\n")
    assert main(["plan", str(s), "--json", "--timeout", "5", "--", "x"]) == 0
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert d["graphs"][0]["plans"]["planned"]["kernels"] >= 1 and "ARGS ['x']" in err


def test_usage_error_after_a_subcommand_names_it(capsys):
    from superopt.cli import main
    assert main(["tune", "--no-such-flag", "--json"]) == 2
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "usage" and d["command"] == "tune"
