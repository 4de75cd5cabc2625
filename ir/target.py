"""``Target``: the one description of a machine that schedules are checked, lowered and
costed for — who makes it (vendor), which chip (arch), what it can do (an explicit set of
capabilities), its resources and its calibrated ceilings.

It sits in ``ir/`` (the bottom layer) so the legality check and the lowerings ask it
directly; ``search/machine.py`` holds the built-in targets (H100, H200, the Hexagon DSP,
the host CPU read from ``/proc/cpuinfo``) and their calibration files.

Code asks a capability, never a vendor or a kind: ``target.has("mma.sync")`` before an
mma.sync schedule, ``target.is_simt`` before blocks of threads and shared memory,
``target.warp`` wherever a warp's lane count matters (thread counts of tensor-core
schedules, warp-wide folds, bank phases, the emulator's warps).

Capabilities (add a name here when code starts asking for it):

=============  ========================================================================
``simt``       blocks of threads run in warps of ``warp`` lanes, block-shared memory,
               barriers (GPUs): the THREAD level, staging, row partials in shared memory
``threads``    host cores run OS threads (``Schedule.workers`` of them) over GRID chunks,
               compiled C on the machine itself (the CPU backend)
``mma.sync``   NVIDIA warp-wide matrix instructions (sm_80+: mma.sync, ldmatrix)
``cp.async``   NVIDIA asynchronous global->shared copies (sm_80+)
``wgmma``      NVIDIA warpgroup MMA reading shared-memory descriptors (sm_90a)
``tma``        NVIDIA tensor-memory-accelerator bulk copies with mbarriers (sm_90a)
``hvx``        Hexagon HVX vectors of ``simd_bytes`` (32 int32 lanes at 128 bytes)
``hvx_vrmpy``  HVX ``vrmpy`` byte dot-product accumulates
``sse2`` ...   x86 ISA flags as /proc/cpuinfo names them (``avx2``, ``fma``, ``avx512f``,
               ``avx512fp16``, ...): what the host's C compiler may use
=============  ========================================================================

Adding an AMD GPU (warp 64) takes:
1. a ``Target(name, vendor="amd", arch="gfx90a", capabilities={"simt"}, warp=64, ...)`` with
   its resources and datasheet ceilings in ``search/machine.py`` (``BUILTIN``, so ``load``
   and calibration find it);
2. a backend in ``backends/`` (a HIP renderer and runner): ``backends/cuda`` renders for
   NVIDIA only (``__shfl_xor_sync`` masks of ``NVIDIA_WARP`` lanes), and ``backends/emu``
   refuses a target whose warp is not NVIDIA's;
3. nothing in ir/ or search/ for plain SIMT, row-kernel and staged SIMT schedules: they
   check, lower and cost with ``target.warp`` (thread counts, warp-wide row folds, bank
   phases, the SIMT cost model's warps); the bank model keeps ``smem_banks`` banks of 4 bytes;
4. for matrix cores, a new capability (e.g. ``"mfma"``) with its own geometry and check
   beside ``ir/tensorcore.py``, its lowering, renderer and a family in ``search/families/``:
   mma.sync / wgmma / TMA schedules are refused without their capability, and the mma
   fragments also refuse a warp other than their 32 lanes (``tensorcore.warp_fits``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

# The fields a calibration measures or a device query reports; the identity of a target
# (name, vendor, arch, capabilities, warp) is never read back from a file.
IDENTITY = ("name", "vendor", "arch", "capabilities", "warp", "calibrated")


@dataclass(frozen=True)
class Target:
    name: str
    vendor: str                     # "nvidia" | "x86" | "arm" | "qualcomm" | ...
    arch: str                       # "sm_90", "hexagonv66", the host's ISA ("x86-64")
    capabilities: frozenset[str]
    cores: int                      # CPU cores / GPU SMs / DSP hardware threads
    max_threads: int = 1            # threads per block (SIMT)
    max_upcast: int = 64            # register-tile elements per thread
    simd_bytes: int = 16            # CPU vector register / HVX vector
    warp: int = 1                   # lanes that run in lock step (1: no SIMT)
    regs_per_sm: int = 0
    max_regs_per_thread: int = 255
    smem_per_block: int = 0         # bytes
    smem_per_sm: int = 0
    max_threads_per_sm: int = 0
    max_blocks_per_sm: int = 0
    smem_banks: int = 32
    vliw_slots: int = 0             # instructions a packet (VLIW DSPs); 0 elsewhere
    l2_bytes: int = 0
    # ceilings (per second); calibration overwrites these
    dram_bw: float = 20e9           # bytes/s, read + write
    flops_fp32: float = 100e9       # FMA counted as 2
    flops_tc_fp16: float = 0.0      # tensor-core fp16/bf16, fp32 accumulate
    smem_bw: float = 0.0
    launch_s: float = 5e-6
    calibrated: bool = False
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))  # JSON and callers give lists
        if self.warp < 1: raise ValueError(f"target {self.name}: warp {self.warp} < 1")
        if "simt" in self.capabilities and self.warp < 2:
            raise ValueError(f"target {self.name}: a SIMT target needs a warp of 2+ lanes, not {self.warp}")

    def has(self, *caps: str) -> bool:
        """Whether the target has every capability named."""
        return all(c in self.capabilities for c in caps)

    @property
    def is_simt(self) -> bool:
        """Blocks of threads in warps, with block-shared memory (a GPU)."""
        return "simt" in self.capabilities

    @property
    def sm(self) -> int:
        """NVIDIA compute capability x10 (90 for sm_90), 0 on other vendors' chips."""
        if self.vendor != "nvidia" or not self.arch.startswith("sm_"): return 0
        return int("".join(c for c in self.arch[3:] if c.isdigit()) or 0)

    def with_capabilities(self, add: tuple[str, ...] = (), drop: tuple[str, ...] = (), **changes: Any) -> "Target":
        """A copy with capabilities added or dropped (and other fields changed)."""
        return replace(self, capabilities=(self.capabilities | set(add)) - set(drop), **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["capabilities"] = sorted(self.capabilities)
        return d

    def sm_clock(self) -> float:
        """A GPU SM's cycles a second, from the fp32 FMA peak: 4 warp schedulers, each one FFMA
        warp instruction (warp lanes x 2 flops) a cycle."""
        return self.flops_fp32 / (self.cores * 4 * self.warp * 2)
