"""Adding a schedule family is adding one module to one folder: a toy family written into a
test-local package is found by ``registry(package)``, offered by ``applicable`` and solved
through the interface, and its schedule runs correctly on the CPU."""
from __future__ import annotations

import sys
import textwrap

import pytest

from superopt import Tensor
from superopt.search import families
from superopt.search.machine import H100, load
from superopt.verify import verify

CPU = load("cpu")

TOY = '''
"""A toy family: the plain loop nest (one grid level per axis), costed by the SIMT model."""
import time
from superopt.ir.schedule import Schedule, check
from superopt.search import cost
from superopt.search.families import Candidate, Solved


class Toy:
    name = "toy_naive"

    def applies(self, kernel, machine):
        return kernel.kind == "elementwise" and machine.has("threads")

    def space(self, kernel, machine):
        return iter([Schedule.naive(kernel)])

    def legal(self, kernel, schedule, machine):
        return check(kernel, schedule, machine)

    def cost(self, kernel, schedule, machine):
        return cost.modeled_time(kernel, schedule, machine)

    def hand(self, kernel, machine):
        return Schedule.naive(kernel)

    def solve(self, kernel, machine, timeout_s, top=4):
        t0 = time.monotonic()
        cands = [Candidate(s, self.cost(kernel, s, machine)) for s in self.space(kernel, machine)]
        return Solved(self.name, cands[:top], "enumeration", True, cands[0].modeled_s, time.monotonic() - t0)


FAMILY = Toy()
'''


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    pkg = tmp_path / "toy_families"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toy.py").write_text(textwrap.dedent(TOY))
    (pkg / "helper.py").write_text("X = 1\n")   # a module without FAMILY is not a family
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toy_families"
    for name in [m for m in sys.modules if m.startswith("toy_families")]: del sys.modules[name]


def test_toy_family_flows_through_registry_applicable_and_solve(toy_package, cpu_backend):
    fams = families.registry(toy_package)
    assert [f.name for f in fams] == ["toy_naive"]
    k = (Tensor.empty(300, name="x") * 3 + 1).schedule()[0].kernel
    assert families.applicable(k, CPU, fams) == fams
    assert families.applicable(k, H100, fams) == []
    r = fams[0].solve(k, CPU, 1.0)
    assert r.family == "toy_naive" and r.proved_optimal and len(r.candidates) == 1
    s = r.candidates[0].schedule
    assert fams[0].legal(k, s, CPU) == [] and r.candidates[0].modeled_s > 0
    assert verify(k, s, cpu_backend).ok


def test_toy_family_is_not_in_the_project_registry(toy_package):
    assert "toy_naive" not in {f.name for f in families.registry()}


def test_registry_of_a_missing_package_raises():
    with pytest.raises(ModuleNotFoundError):
        families.registry("no_such_family_package")
