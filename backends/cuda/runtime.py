"""The CUDA runtime layer: NVRTC compilation and the driver API through NVIDIA's
``cuda-python`` bindings (no PyTorch). Every return code is checked; failures raise
``CudaError`` naming the call, the CUDA error and the stage (init, compile, launch, ...).

Timing follows one method everywhere (kernels and calibration alike): warm-up, L2
flushed before every timed launch by writing a buffer larger than L2, input sets rotated,
CUDA events around each launch, median of many runs. The write leaves L2 full of dirty
lines that the timed kernel's own traffic evicts (written back to DRAM on its time):
``SUPEROPT_L2_FLUSH=clean`` then reads the flush buffer once more, so the timed kernel
finds clean lines — a diagnostic of what that write-back costs (``flush_mode``).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

try:  # cuda-python >= 12.6 layout, then the older one
    from cuda.bindings import driver as _drv, nvrtc as _nvrtc
except ImportError:  # pragma: no cover - depends on the installed bindings
    try:
        from cuda import cuda as _drv, nvrtc as _nvrtc  # type: ignore
    except ImportError:
        _drv = _nvrtc = None

# errors after which the context is unusable: the process that saw one must exit. Any error
# that a kernel's execution reports counts too (``CudaError.sticky``): the H100 reported an
# out-of-range store as INVALID_ADDRESS_SPACE, which this list lacked, and every later call failed.
STICKY = {"CUDA_ERROR_ILLEGAL_ADDRESS", "CUDA_ERROR_LAUNCH_FAILED", "CUDA_ERROR_MISALIGNED_ADDRESS",
          "CUDA_ERROR_ILLEGAL_INSTRUCTION", "CUDA_ERROR_HARDWARE_STACK_ERROR", "CUDA_ERROR_ASSERT",
          "CUDA_ERROR_INVALID_PC", "CUDA_ERROR_ECC_UNCORRECTABLE", "CUDA_ERROR_LAUNCH_TIMEOUT",
          "CUDA_ERROR_INVALID_ADDRESS_SPACE"}
EXECUTION = "kernel execution"  # what a synchronize after launches is called in its error


FLUSH_MODES = ("write", "clean")

# read after the flush's write (clean mode): evicts its dirty lines before the timed launch
_TOUCH = r"""
extern "C" __global__ void l2_touch(const float4* __restrict__ p, long long n, float* __restrict__ sink) {
  float s = 0.0f;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float4 v = p[i]; s += v.x + v.y + v.z + v.w;
  }
  if (s == -1.0f) sink[0] = s;  // never true for the flush's 1.0 fill: keeps the reads
}
"""


def flush_mode() -> str:
    """How timing flushes L2: ``write`` (the default) or ``clean`` (see the module doc)."""
    mode = os.environ.get("SUPEROPT_L2_FLUSH", "write") or "write"
    if mode not in FLUSH_MODES: raise ValueError(f"SUPEROPT_L2_FLUSH={mode!r}: expected one of {', '.join(FLUSH_MODES)}")
    return mode


class CudaError(RuntimeError):
    """A failed CUDA call: ``stage`` is init | compile | memory | launch | timing."""

    def __init__(self, stage: str, message: str, code: str = ""):
        super().__init__(f"{stage}: {message}")
        self.stage, self.code = stage, code

    @property
    def sticky(self) -> bool:
        return self.code in STICKY or (self.code.startswith("CUDA_ERROR") and EXECUTION in str(self))


class NoDevice(CudaError):
    def __init__(self, why: str):
        super().__init__("init", f"no CUDA device is present ({why})", "NO_DEVICE")
        self.args = (f"no CUDA device is present ({why})",)  # said plainly, without the stage


def available() -> tuple[bool, str]:
    """Whether a CUDA device can be used here, and why not."""
    try:
        Device.get()
        return True, ""
    except CudaError as e:
        return False, str(e)


def _err_name(err) -> str:
    try:
        r = _drv.cuGetErrorName(err)
        return r[1].decode() if r[1] else str(err)
    except Exception:  # noqa: BLE001 - a name is best effort
        return str(err)


def check(result, stage: str, what: str):
    """Unpack a driver call's ``(err, *values)``; raise ``CudaError`` unless success."""
    err, *vals = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = _err_name(err)
        try:
            desc = _drv.cuGetErrorString(err)[1].decode()
        except Exception:  # noqa: BLE001
            desc = ""
        raise CudaError(stage, f"{what} failed: {name}{': ' + desc if desc else ''}", name)
    return vals[0] if len(vals) == 1 else tuple(vals) if vals else None


def _out_buffer(size: int) -> bytes:
    """A fresh bytes object for NVRTC to write into. Never ``b" " * size``: for size 1
    that is CPython's shared one-byte object, and writing a NUL into it corrupts every
    b" " in the process."""
    return b"\0" * (size + 2)


def _nvrtc_check(result, what: str):
    err, *vals = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        msg = _nvrtc.nvrtcGetErrorString(err)[1]
        raise CudaError("compile", f"{what} failed: {msg.decode() if isinstance(msg, bytes) else msg}", "NVRTC")
    return vals[0] if len(vals) == 1 else tuple(vals) if vals else None


@dataclass
class DeviceArray:
    """A raw device allocation (freed with ``free`` or when the device is closed)."""
    ptr: int
    nbytes: int

    def upload(self, host: np.ndarray) -> None:
        h = np.ascontiguousarray(host)
        if h.nbytes > self.nbytes: raise CudaError("memory", f"upload of {h.nbytes} bytes into {self.nbytes}")
        check(_drv.cuMemcpyHtoD(self.ptr, h.ctypes.data, h.nbytes), "memory", "cuMemcpyHtoD")

    def download(self, dtype, count: int) -> np.ndarray:
        out = np.empty(count, dtype=dtype)
        check(_drv.cuMemcpyDtoH(out.ctypes.data, self.ptr, out.nbytes), "memory", "cuMemcpyDtoH")
        return out

    def fill_bytes(self, byte: int) -> None:
        check(_drv.cuMemsetD8(self.ptr, byte & 0xFF, self.nbytes), "memory", "cuMemsetD8")


@dataclass
class Function:
    """A loaded kernel with the compiler's resource report."""
    handle: object
    name: str
    registers: int
    local_bytes: int      # stack / spills: non-zero means registers went to local memory
    static_smem: int
    max_threads: int
    log: str = ""


@dataclass
class Device:
    ordinal: int
    handle: object
    context: object
    name: str
    cc: tuple[int, int]
    sms: int
    l2_bytes: int
    smem_optin: int
    clock_khz: int
    mem_clock_khz: int
    bus_bits: int
    _modules: dict = field(default_factory=dict)
    _flush: DeviceArray | None = None
    _touch: Function | None = None   # the clean flush's read kernel, compiled on first use
    _scratch: list = field(default_factory=list)

    _current = None

    @classmethod
    def get(cls, ordinal: int = 0) -> "Device":
        """The process's device (initialized once; raises ``NoDevice`` when absent)."""
        if cls._current is None:
            cls._current = cls._open(ordinal)
        return cls._current

    @classmethod
    def _open(cls, ordinal: int) -> "Device":
        if _drv is None: raise NoDevice("the cuda-python bindings are not installed")
        try:
            err, = _drv.cuInit(0)
        except Exception as e:  # noqa: BLE001 - missing libcuda surfaces as various exceptions
            raise NoDevice(f"the CUDA driver could not be loaded: {e}") from None
        if int(err) != 0: raise NoDevice(f"cuInit: {_err_name(err)}")
        n = check(_drv.cuDeviceGetCount(), "init", "cuDeviceGetCount")
        if n <= ordinal: raise NoDevice(f"{n} devices visible")
        dev = check(_drv.cuDeviceGet(ordinal), "init", "cuDeviceGet")
        ctx = check(_drv.cuDevicePrimaryCtxRetain(dev), "init", "cuDevicePrimaryCtxRetain")
        check(_drv.cuCtxSetCurrent(ctx), "init", "cuCtxSetCurrent")
        A = _drv.CUdevice_attribute
        attr = lambda a: check(_drv.cuDeviceGetAttribute(getattr(A, a), dev), "init", a)  # noqa: E731
        name = check(_drv.cuDeviceGetName(256, dev), "init", "cuDeviceGetName").split(b"\0")[0].decode()
        return cls(ordinal, dev, ctx, name,
                   (attr("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR"), attr("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR")),
                   attr("CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT"), attr("CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
                   attr("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN"),
                   attr("CU_DEVICE_ATTRIBUTE_CLOCK_RATE"), attr("CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE"),
                   attr("CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH"))

    @property
    def arch(self) -> str: return f"sm_{self.cc[0]}{self.cc[1]}"

    def info(self) -> dict:
        return {"name": self.name, "arch": self.arch, "sms": self.sms, "l2_bytes": self.l2_bytes,
                "smem_optin": self.smem_optin, "clock_mhz": self.clock_khz / 1e3,
                "driver": check(_drv.cuDriverGetVersion(), "init", "cuDriverGetVersion"),
                "nvrtc": ".".join(map(str, _nvrtc_check(_nvrtc.nvrtcVersion(), "nvrtcVersion")))}

    # ---- compilation ---------------------------------------------------------
    def compile(self, source: str, name: str, options: Sequence[str] = ()) -> Function:
        """NVRTC -> cubin for this device's arch, loaded; cached by source."""
        key = hashlib.sha256((source + name + "\0".join(options)).encode()).hexdigest()
        if key in self._modules: return self._modules[key]
        prog = _nvrtc_check(_nvrtc.nvrtcCreateProgram(source.encode(), f"{name}.cu".encode(), 0, [], []),
                            "nvrtcCreateProgram")
        from .wgmma import arch_for  # wgmma needs the arch-specific target (sm_90a)
        opts = [f"--gpu-architecture={arch_for(source, self.arch)}", "-default-device", "-std=c++17", *options]
        err, = _nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        size = _nvrtc_check(_nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buf = _out_buffer(size)
        _nvrtc_check(_nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.decode(errors="replace").rstrip("\0 \n")
        if int(err) != 0:
            _nvrtc.nvrtcDestroyProgram(prog)
            raise CudaError("compile", f"NVRTC could not compile {name}:\n{log}", "NVRTC")
        size = _nvrtc_check(_nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = _out_buffer(size)
        _nvrtc_check(_nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        _nvrtc.nvrtcDestroyProgram(prog)
        mod = check(_drv.cuModuleLoadData(cubin), "compile", "cuModuleLoadData")
        fn = check(_drv.cuModuleGetFunction(mod, name.encode()), "compile", f"cuModuleGetFunction({name})")
        F = _drv.CUfunction_attribute
        fattr = lambda a: check(_drv.cuFuncGetAttribute(getattr(F, a), fn), "compile", a)  # noqa: E731
        f = Function(fn, name, fattr("CU_FUNC_ATTRIBUTE_NUM_REGS"), fattr("CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES"),
                     fattr("CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES"), fattr("CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK"), log)
        self._modules[key] = f
        return f

    # ---- memory --------------------------------------------------------------
    def alloc(self, nbytes: int) -> DeviceArray:
        return DeviceArray(int(check(_drv.cuMemAlloc(max(1, nbytes)), "memory", f"cuMemAlloc({nbytes})")), nbytes)

    def free(self, a: DeviceArray) -> None:
        if a.ptr: check(_drv.cuMemFree(a.ptr), "memory", "cuMemFree")
        a.ptr = 0

    def synchronize(self) -> None:
        check(_drv.cuCtxSynchronize(), "launch", f"{EXECUTION} (cuCtxSynchronize)")

    # ---- launching -----------------------------------------------------------
    def launch(self, fn: Function, grid: Sequence[int], block: Sequence[int], args: Sequence, smem: int = 0,
               stream=0) -> None:
        """Launch ``fn``; ``args`` are DeviceArrays, ints (int32), floats (float32) or
        ctypes values. Shared memory beyond 48 KB is opted in first."""
        if smem > 48 * 1024:
            check(_drv.cuFuncSetAttribute(fn.handle, _drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                          smem), "launch", "cuFuncSetAttribute(dynamic shared memory)")
        vals = [ctypes.c_uint64(a.ptr) if isinstance(a, DeviceArray) else ctypes.c_int32(a) if isinstance(a, (int, np.integer))
                else ctypes.c_float(a) if isinstance(a, (float, np.floating)) else a for a in args]
        ptrs = (ctypes.c_void_p * max(1, len(vals)))(*[ctypes.addressof(v) for v in vals])
        g = tuple(grid) + (1,) * (3 - len(grid)); b = tuple(block) + (1,) * (3 - len(block))  # noqa: E702
        check(_drv.cuLaunchKernel(fn.handle, *g, *b, smem, stream, ctypes.addressof(ptrs), 0), "launch",
              f"cuLaunchKernel({fn.name}, grid {g}, block {b}, smem {smem})")

    # ---- TMA tensor maps ------------------------------------------------------
    def tensor_map(self, args: dict) -> ctypes.Array:
        """``cuTensorMapEncodeTiled`` of ``args`` (backends/cuda/tma.encode_args: enum names,
        lists of ints), as the 128 bytes a kernel's ``CUtensorMap`` parameter is launched with
        (a 64-byte aligned host copy)."""
        u64, u32 = _drv.cuuint64_t, _drv.cuuint32_t
        enum = lambda kind, name: getattr(getattr(_drv, kind), name)  # noqa: E731
        tmap = check(_drv.cuTensorMapEncodeTiled(
            enum("CUtensorMapDataType", args["tensorDataType"]), args["tensorRank"], args["globalAddress"],
            [u64(x) for x in args["globalDim"]], [u64(x) for x in args["globalStrides"]], [u32(x) for x in args["boxDim"]],
            [u32(x) for x in args["elementStrides"]], enum("CUtensorMapInterleave", args["interleave"]),
            enum("CUtensorMapSwizzle", args["swizzle"]), enum("CUtensorMapL2promotion", args["l2Promotion"]),
            enum("CUtensorMapFloatOOBfill", args["oobFill"])), "launch", f"cuTensorMapEncodeTiled({args})")
        words = [int(w) for w in tmap.opaque]
        raw = (ctypes.c_uint8 * (8 * len(words) + 64))()
        at = -(-ctypes.addressof(raw) // 64) * 64
        out = (ctypes.c_uint64 * len(words)).from_address(at)
        out[:] = words
        out._keep = raw  # the aligned view must not outlive its storage
        return out

    # ---- timing --------------------------------------------------------------
    def flush_l2(self) -> None:
        """Write a buffer twice the size of L2 so no input stays cached (clean mode: then
        read it, so the lines left in L2 are clean)."""
        if self._flush is None: self._flush = self.alloc(max(2 * self.l2_bytes, 8 << 20))
        check(_drv.cuMemsetD32Async(self._flush.ptr, 0x3F800000, self._flush.nbytes // 4, 0), "timing", "L2 flush")
        if flush_mode() == "clean":
            if self._touch is None: self._touch = self.compile(_TOUCH, "l2_touch")
            self.launch(self._touch, [self.sms * 4], [256], [self._flush, ctypes.c_int64(self._flush.nbytes // 16), self._flush])

    def time(self, run: Callable[[int], None], reps: int = 50, warmup: int = 3, flush: bool = True,
             budget_s: float = 2.0) -> list[float]:
        """Seconds per call of ``run(i)`` (i = rep index, for rotating input sets):
        CUDA events around each call, L2 flushed before it; stops early past ``budget_s``."""
        for i in range(warmup): run(i)
        self.synchronize()
        E = _drv.CUevent_flags.CU_EVENT_DEFAULT
        times: list[float] = []
        spent = 0.0
        while len(times) < reps:
            batch = min(reps - len(times), 10)
            evs = [(check(_drv.cuEventCreate(E), "timing", "cuEventCreate"), check(_drv.cuEventCreate(E), "timing", "cuEventCreate"))
                   for _ in range(batch)]
            for j, (a, b) in enumerate(evs):
                if flush: self.flush_l2()
                check(_drv.cuEventRecord(a, 0), "timing", "cuEventRecord")
                run(len(times) + j)
                check(_drv.cuEventRecord(b, 0), "timing", "cuEventRecord")
            for a, b in evs:
                check(_drv.cuEventSynchronize(b), "launch", f"{EXECUTION} (cuEventSynchronize)")
                ms = check(_drv.cuEventElapsedTime(a, b), "timing", "cuEventElapsedTime")
                times.append(ms / 1e3)
                spent += ms / 1e3
                check(_drv.cuEventDestroy(a), "timing", "cuEventDestroy"); check(_drv.cuEventDestroy(b), "timing", "cuEventDestroy")  # noqa: E702
            if spent > budget_s and len(times) >= 5: break
        return times


def median(xs: Sequence[float]) -> float: return statistics.median(xs)
