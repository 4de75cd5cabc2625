"""The built-in targets and their calibration: the numbers the cost model and legality
checks need, as ``ir.target.Target`` values.

Datasheet defaults here; ``superopt calibrate`` measures the real ceilings and stores
them in the user's cache dir, and ``load(name)`` prefers those measurements.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import replace
from pathlib import Path

from ..ir.target import IDENTITY, Target

# the x86 ISA flags of /proc/cpuinfo a host target carries as capabilities
X86_FLAGS = ("sse2", "ssse3", "sse4_1", "sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw",
             "avx512vl", "avx512_vnni", "avx512_bf16", "avx512fp16")
NVIDIA_WARP = 32   # lanes of an NVIDIA warp (every arch); CUDA's warpSize, the PTX fragment layouts' lanes
# NVIDIA capabilities by compute capability (the first arch that has each)
NVIDIA_SINCE = {"simt": 0, "mma.sync": 80, "cp.async": 80, "wgmma": 90, "tma": 90}


def nvidia_capabilities(sm: int) -> frozenset[str]:
    """What an NVIDIA GPU of compute capability ``sm`` (x10) can do."""
    return frozenset(c for c, since in NVIDIA_SINCE.items() if sm >= since)


def nvidia_at(base: Target, sm: int, **changes) -> Target:
    """``base`` as an sm_<sm> part: its arch and the capabilities of that arch (e.g. an
    H100's numbers without wgmma/TMA at sm_80)."""
    return replace(base, arch=f"sm_{sm}", capabilities=nvidia_capabilities(sm), **changes)


def cpu_flags(text: str) -> frozenset[str]:
    """The ISA flags a /proc/cpuinfo ``flags`` line lists (the first processor's)."""
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _host_flags() -> frozenset[str]:
    try:
        return cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def host_cpu(flags: frozenset[str] | None = None, cores: int | None = None) -> Target:
    """The host CPU as a target; ``flags`` (default: this machine's /proc/cpuinfo) decide
    the vector width and the ISA capabilities."""
    flags = _host_flags() if flags is None else frozenset(flags)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    simd = 64 if "avx512f" in flags else 32 if "avx2" in flags else 16
    # peak: 2 FMA pipes x lanes x 2 flops x ~3 GHz per core (refined by calibration)
    # register tile: half the vector register file in fp32 elements (AVX-512: 32 registers x 16 / 2)
    vregs = 32 if simd == 64 else 16
    max_upcast = max(128, vregs * (simd // 4) // 2)
    machine = platform.machine().lower()
    vendor, arch = ("x86", "x86-64") if machine in ("x86_64", "amd64") or "sse2" in flags else ("arm", machine or "unknown")
    caps = {"threads"} | {f for f in X86_FLAGS if f in flags}
    return Target("cpu", vendor, arch, frozenset(caps), cores, max_threads=1, max_upcast=max_upcast, simd_bytes=simd,
                  dram_bw=20e9, flops_fp32=cores * 2 * (simd // 4) * 2 * 3.0e9, launch_s=2e-6)


H100 = Target("h100", "nvidia", "sm_90", nvidia_capabilities(90), 132, max_threads=1024, max_upcast=256,
              simd_bytes=16, warp=NVIDIA_WARP, regs_per_sm=65536, max_regs_per_thread=255, smem_per_block=227 * 1024,
              smem_per_sm=228 * 1024, max_threads_per_sm=2048, max_blocks_per_sm=32, l2_bytes=50 * 2**20,
              dram_bw=3.0e12, flops_fp32=67e12, flops_tc_fp16=989e12, smem_bw=132 * 128 * 1.98e9, launch_s=4e-6)
H200 = replace(H100, name="h200", l2_bytes=60 * 2**20, dram_bw=4.3e12)

# Hexagon V66 cDSP with 128-byte HVX: 4 hardware threads with HVX contexts; one thread
# issues one packet (<= 4 instructions) per cycle; ~1 GHz class clocks. HVX v66 has no
# float; flops_fp32 holds the int8 peak (2 multipliers x 128 byte MACs x 2 ops per
# packet, 4 threads). Times come from the VLIW model (search/vliw.py), not these ceilings.
HEXAGON = Target("hexagon", "qualcomm", "hexagonv66", frozenset({"hvx", "hvx_vrmpy"}), 4, max_threads=1,
                 max_upcast=128, simd_bytes=128, vliw_slots=4,
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


def load(name: str) -> Target:
    """A target by name ('cpu', 'h100', 'h200', 'hexagon'), with stored calibration applied:
    the measured numbers only; its vendor, arch, capabilities and warp stay the built-in's."""
    base = host_cpu() if name == "cpu" else BUILTIN.get(name)
    if base is None: raise ValueError(f"unknown machine {name!r} (known: cpu, {', '.join(BUILTIN)})")
    path = calibration_dir() / f"machine-{name}.json"
    if path.exists():
        try:
            measured = json.loads(path.read_text())
            known = {k: v for k, v in measured.items() if k in base.__dataclass_fields__ and k not in IDENTITY}
            return replace(base, **known, calibrated=True)
        except (ValueError, TypeError, AttributeError):
            pass  # a damaged calibration file falls back to datasheet numbers
    return base


def save_calibration(m: Target) -> Path:
    path = calibration_dir() / f"machine-{m.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(m.to_dict(), indent=1))
    os.replace(tmp, path)
    return path
