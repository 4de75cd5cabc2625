"""Tune functions for the Ray tests, imported by the Ray workers (``--tune-fn ray_hooks:...``):
the real tune engine, slowed down, or killing its own worker process once."""
import os
import signal
import time
from pathlib import Path

from superopt.tune_cache import default_tune


def slow_tune(kernel, **kw):
    time.sleep(1.5)
    return default_tune()(kernel, **kw)


def dies_once(kernel, **kw):
    """The first kernel to get here kills its worker (SIGKILL, as a lost node would); Ray retries it."""
    marks = Path(os.environ["RAY_HOOK_MARKS"])
    mine = marks / f"{kernel.key}.killed"
    try:
        fd = os.open(marks / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY)   # only one kernel, only once
    except FileExistsError:
        return default_tune()(kernel, **kw)
    os.close(fd)
    mine.touch()
    os.kill(os.getpid(), signal.SIGKILL)
