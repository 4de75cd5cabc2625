"""``emu``: execute lowered Programs in numpy with GPU semantics, counting bank conflicts,
global sectors and instructions (how CUDA schedules are checked without a GPU)."""
from .counters import Counters, bank_wavefronts, sectors
from .executor import EmuError, EmuResult, run_program, sample_blocks


def backend(machine=None):
    from .emu_backend import EmuBackend
    return EmuBackend(machine)


__all__ = ["Counters", "bank_wavefronts", "sectors", "EmuError", "EmuResult", "run_program", "sample_blocks", "backend"]
