"""SUPEROPT_DEBUG (issue 27, deliver 2): 1 logs kernels compiled, launches, verification,
times and cache lookups on stderr, 2 adds the generated code; read once at CLI start into the
explicit context (and restored after the command); nothing at 0."""
from __future__ import annotations

import numpy as np

from superopt import Tensor, debug, runtime
from superopt.cache import Cache
from superopt.cli import main
from superopt.ir import context

PREFIX = "[superopt debug"


def _kernel_file(tmp_path, capsys):
    f = tmp_path / "k.json"
    assert main(["new", "matmul", "M=16", "N=8", "K=4", "-o", str(f)]) == 0
    capsys.readouterr()
    return f


def _run(monkeypatch, capsys, f, level: str | None) -> str:
    if level is None: monkeypatch.delenv(debug.ENV, raising=False)
    else: monkeypatch.setenv(debug.ENV, level)
    assert main(["run", str(f), "--json"]) == 0
    assert context.current().debug == 0                       # entered for the command only
    return capsys.readouterr().err


def test_levels_of_the_cli(tmp_path, capsys, monkeypatch):
    f = _kernel_file(tmp_path, capsys)
    assert PREFIX not in _run(monkeypatch, capsys, f, None)
    assert PREFIX not in _run(monkeypatch, capsys, f, "0")
    one = _run(monkeypatch, capsys, f, "1")
    for what in ("compile matmul_16x8x4_float32", "launch matmul_16x8x4_float32", "verified matmul_16x8x4_float32",
                 "time matmul_16x8x4_float32"):
        assert f"{PREFIX}1] {what}" in one, what
    assert '"splits"' in one and "code of" not in one
    two = _run(monkeypatch, capsys, f, "2")
    code = two[two.index(f"{PREFIX}2] code of matmul_16x8x4_float32 on cpu:"):]
    assert "void" in code and "for (" in code                 # the generated C


def test_cache_hits_and_misses_and_runtime_launches(tmp_path, capsys):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    with context.use(debug=1), runtime.using("cpu", cache=tmp_path / "c.sqlite") as rt:
        got = (Tensor(a, name="a") * 2.0 + 1.0).numpy()
        assert rt.stats["hand"] == 1
    np.testing.assert_array_equal(got, a * 2 + 1)
    err = capsys.readouterr().err
    assert f"{PREFIX}1] cache miss:" in err and f"{PREFIX}1] launch" in err and "hand schedule" in err
    with Cache(tmp_path / "c.sqlite") as c, context.use(debug=1):
        assert c.get("0" * 32, "cpu") is None
    assert f"{PREFIX}1] cache miss: 000000000000 on cpu" in capsys.readouterr().err
    with Cache(tmp_path / "c.sqlite") as c:
        assert c.get("0" * 32, "cpu") is None                 # level 0: silent
    assert capsys.readouterr().err == ""


def test_the_level_from_the_environment(capsys):
    assert debug.level_from_env({}) == 0 and debug.level_from_env({debug.ENV: " "}) == 0
    assert debug.level_from_env({debug.ENV: "1"}) == 1 and debug.level_from_env({debug.ENV: "7"}) == 2
    assert debug.level_from_env({debug.ENV: "-3"}) == 0
    assert debug.level_from_env({debug.ENV: "yes"}) == 0
    assert "SUPEROPT_DEBUG='yes' is not a level" in capsys.readouterr().err
    with context.use(debug=2):
        assert debug.enabled(2)
        debug.log(2, lambda: "two")
        debug.log(3, lambda: 1 / 0)                            # not evaluated above the level
    assert not debug.enabled(1)
    assert capsys.readouterr().err == f"{PREFIX}2] two\n"
