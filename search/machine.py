"""Machine descriptions: the numbers the cost model and legality checks need.

Datasheet defaults here; ``superopt calibrate`` measures the real ceilings and stores
them in the user's cache dir, and ``load(name)`` prefers those measurements.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    name: str
    kind: str                       # "cpu" | "gpu" | "hexagon"
    cores: int                      # CPU cores / GPU SMs / DSP hardware threads
    max_threads: int = 1            # threads per block (GPU)
    max_upcast: int = 64            # register-tile elements per thread
    simd_bytes: int = 16            # CPU vector register / HVX vector
    warp: int = 1
    regs_per_sm: int = 0
    max_regs_per_thread: int = 255
    smem_per_block: int = 0         # bytes
    smem_per_sm: int = 0
    max_threads_per_sm: int = 0
    max_blocks_per_sm: int = 0
    smem_banks: int = 32
    sm: int = 0                     # NVIDIA compute capability x10 (90: Hopper, wgmma); 0 elsewhere
    l2_bytes: int = 0
    # ceilings (per second); calibration overwrites these
    dram_bw: float = 20e9           # bytes/s, read + write
    flops_fp32: float = 100e9       # FMA counted as 2
    flops_tc_fp16: float = 0.0      # tensor-core fp16/bf16, fp32 accumulate
    smem_bw: float = 0.0
    launch_s: float = 5e-6
    calibrated: bool = False
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict: return asdict(self)

    def sm_clock(self) -> float:
        """A GPU SM's cycles a second, from the fp32 FMA peak: 4 warp schedulers, each one FFMA
        warp instruction (warp lanes x 2 flops) a cycle."""
        return self.flops_fp32 / (self.cores * 4 * self.warp * 2)


def _cpu_simd_bytes() -> int:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 16
    if " avx512f" in flags: return 64
    if " avx2" in flags: return 32
    return 16


def host_cpu() -> Machine:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    simd = _cpu_simd_bytes()
    # peak: 2 FMA pipes x lanes x 2 flops x ~3 GHz per core (refined by calibration)
    # register tile: half the vector register file in fp32 elements (AVX-512: 32 x 16 / 2)
    max_upcast = max(128, (32 if simd == 64 else 16) * (simd // 4) // 2)
    return Machine("cpu", "cpu", cores, max_threads=1, max_upcast=max_upcast, simd_bytes=simd,
                   dram_bw=20e9, flops_fp32=cores * 2 * (simd // 4) * 2 * 3.0e9, launch_s=2e-6)


H100 = Machine("h100", "gpu", 132, max_threads=1024, max_upcast=256, simd_bytes=16, warp=32,
               regs_per_sm=65536, max_regs_per_thread=255, smem_per_block=227 * 1024, smem_per_sm=228 * 1024,
               max_threads_per_sm=2048, max_blocks_per_sm=32, l2_bytes=50 * 2**20, sm=90,
               dram_bw=3.0e12, flops_fp32=67e12, flops_tc_fp16=989e12, smem_bw=132 * 128 * 1.98e9,
               launch_s=4e-6)
H200 = replace(H100, name="h200", l2_bytes=60 * 2**20, dram_bw=4.3e12)

# Hexagon V66 cDSP with 128-byte HVX: 4 hardware threads with HVX contexts; one thread
# issues one packet (<= 4 instructions) per cycle; ~1 GHz class clocks. HVX v66 has no
# float; flops_fp32 holds the int8 peak (2 multipliers x 128 byte MACs x 2 ops per
# packet, 4 threads). Times come from the VLIW model (search/vliw.py), not these ceilings.
HEXAGON = Machine("hexagon", "hexagon", 4, max_threads=1, max_upcast=128, simd_bytes=128,
                  dram_bw=12e9, flops_fp32=4 * 1.0e9 * 2 * 2 * 128, launch_s=50e-6,
                  notes={"cpu": "hexagonv66", "hvx_bytes": 128, "packet_slots": 4,
                         # HexagonBackend.time: seconds = packets counted by qemu (c20) / clock_hz
                         # + stall packets / clock_hz; the stall model is none (0 stall packets):
                         # qemu counts issued packets only, and no hardware is here to calibrate
                         "clock_hz": 1.0e9, "clock_source": "assumption: a 1 GHz class cDSP clock, not measured",
                         "stall_model": "none (0 stall packets)"})

BUILTIN = {"h100": H100, "h200": H200, "hexagon": HEXAGON}


def calibration_dir() -> Path:
    base = os.environ.get("SUPEROPT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "superopt")
    return Path(base)


def load(name: str) -> Machine:
    """A machine by name ('cpu', 'h100', 'h200'), with stored calibration applied."""
    base = host_cpu() if name == "cpu" else BUILTIN.get(name)
    if base is None: raise ValueError(f"unknown machine {name!r} (known: cpu, {', '.join(BUILTIN)})")
    path = calibration_dir() / f"machine-{name}.json"
    if path.exists():
        try:
            measured = json.loads(path.read_text())
            known = {k: v for k, v in measured.items() if k in base.__dataclass_fields__ and k not in ("name", "calibrated")}
            return replace(base, **known, calibrated=True)
        except (ValueError, TypeError):
            pass  # a damaged calibration file falls back to datasheet numbers
    return base


def save_calibration(m: Machine) -> Path:
    path = calibration_dir() / f"machine-{m.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(m.to_dict(), indent=1))
    os.replace(tmp, path)
    return path
