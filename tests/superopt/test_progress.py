"""The progress reporter: plain lines with ETA, JSON lines, silence with -q."""
import io
import json

from superopt.progress import Progress


def _drive(**kw):
    t, s = [0.0], io.StringIO()
    p = Progress("tune", stream=s, tty=False, clock=lambda: t[0], **kw)
    for i in range(1, 5):
        t[0] += 1.0
        p(i, 4, "compile")
    p.close()
    return s.getvalue()


def test_plain_lines_have_counts_and_eta():
    out = _drive().splitlines()
    assert out[0] == "superopt tune: compile 1/4 (25%) 1.0 s, ETA 3.0 s"
    assert out[-1] == "superopt tune: compile 4/4 (100%) 4.0 s"


def test_json_lines_and_quiet():
    rows = [json.loads(x) for x in _drive(as_json=True).splitlines()]
    assert rows[0] == {"progress": "tune", "what": "compile", "done": 1, "total": 4, "elapsed_s": 1.0, "eta_s": 3.0}
    assert _drive(verbosity=-1) == ""
