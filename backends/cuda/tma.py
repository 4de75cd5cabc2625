"""CUDA spelling of TMA copies and mbarriers (ir/program.py ``Mbarriers``, ``MbarInit``,
``MbarArriveTx``, ``MbarWait``, ``TmaLoad``) as inline PTX for sm_90a, called from
``render.py``, and the arguments of ``cuTensorMapEncodeTiled`` for each tensor map, as
plain data (the runtime hands them to the driver at launch: ``runtime.Device.tensor_map``).

- The kernel takes one ``const __grid_constant__ CUtensorMap`` parameter per tensor map
  (``ir.program.tensor_maps`` order) after its buffers; a copy names the parameter's
  generic address. ``CUtensorMap`` is declared here as the driver's header does (128
  bytes, 64-byte aligned) where that header is not included (NVRTC, plain nvcc).
- mbarriers are ``unsigned long long`` arrays placed in the dynamic shared memory after
  the operand buffers (``wgmma.shared_decls``): ``Mbarriers`` itself emits nothing.
- ``MbarWait`` loops on ``mbarrier.try_wait.parity`` (which may return false after a
  time-out of its own) until it reports the phase complete, the loop inside the asm (a
  C++ loop around it made ptxas serialize wgmmas kept in flight across the wait, C7514).
- ``MbarArriveTx`` of 0 bytes is a plain ``mbarrier.arrive`` (a consumer releasing a stage).
- ``TmaLoad``: ``cp.async.bulk.tensor.<rank>d.shared::cluster.global.tile.mbarrier::
  complete_tx::bytes`` (a CTA's own shared addresses are valid cluster addresses).
"""
from __future__ import annotations

from ...ir import dtype as dt
from ...ir.program import MbarArriveTx, MbarInit, Mbarriers, MbarWait, Program, TmaLoad, tensor_maps

STMTS = (Mbarriers, MbarInit, MbarArriveTx, MbarWait, TmaLoad)
MARK = "cp.async.bulk.tensor"

PRELUDE = r"""
#ifndef __cuda_cuda_h__
typedef struct __align__(64) CUtensorMap_st { unsigned long long opaque[16]; } CUtensorMap;
#endif
__device__ __forceinline__ unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(unsigned long long* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive_tx(unsigned long long* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned long long* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
  asm volatile("{\n.reg .pred p;\nTMA_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra TMA_WAIT;\n}\n"
               :: "r"(smem_u32(bar)), "r"(parity) : "memory");
}
"""

# ---- cuTensorMapEncodeTiled arguments (names of the driver's enums) ---------------------
DATA_TYPE = {"float16": "CU_TENSOR_MAP_DATA_TYPE_FLOAT16", "bfloat16": "CU_TENSOR_MAP_DATA_TYPE_BFLOAT16",
             "float32": "CU_TENSOR_MAP_DATA_TYPE_FLOAT32", "int32": "CU_TENSOR_MAP_DATA_TYPE_INT32",
             "uint8": "CU_TENSOR_MAP_DATA_TYPE_UINT8", "int8": "CU_TENSOR_MAP_DATA_TYPE_UINT8"}
SWIZZLE = {0: "CU_TENSOR_MAP_SWIZZLE_NONE", 32: "CU_TENSOR_MAP_SWIZZLE_32B", 64: "CU_TENSOR_MAP_SWIZZLE_64B",
           128: "CU_TENSOR_MAP_SWIZZLE_128B"}
INTERLEAVE = "CU_TENSOR_MAP_INTERLEAVE_NONE"
L2_PROMOTION = "CU_TENSOR_MAP_L2_PROMOTION_L2_256B"   # operand tiles are read whole: fetch 256-byte lines
OOB_FILL = "CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE"        # elements outside the tensor read as zeros


def uses(p: Program) -> bool:
    return any(isinstance(s, TmaLoad) for s in p.walk())


def specs(p: Program) -> list[dict]:
    """Each tensor-map parameter of ``p`` as plain data (JSON for the worker): the launch
    argument holding its buffer (``arg``: inputs follow the output) and its geometry."""
    return [{"arg": m.input + 1, "dtype": p.inputs[m.input].dtype.name, "offset": m.offset, "dims": list(m.dims),
             "strides": list(m.strides), "box": list(m.box), "swizzle": m.swizzle} for m in tensor_maps(p)]


def encode_args(spec: dict, address: int) -> dict:
    """The arguments of ``cuTensorMapEncodeTiled`` for a tensor map ``spec`` (``specs``)
    over a buffer at device ``address``, checked against the driver's documented limits
    (ValueError): global address and strides 16-byte multiples, strides below 2^40 bytes,
    dims in 1..2^32, box in 1..256 with 16-byte multiple rows no wider than the swizzle,
    rank 1..5."""
    isz = dt.dtype_by_name(spec["dtype"]).itemsize
    dims, strides, box, swz = list(spec["dims"]), list(spec["strides"]), list(spec["box"]), int(spec["swizzle"])
    rank = len(dims)
    addr = int(address) + int(spec["offset"]) * isz
    stride_bytes = [s * isz for s in strides[1:]]
    why = []
    if not 1 <= rank <= 5 or len(strides) != rank or len(box) != rank: why.append(f"rank {rank} with {len(strides)} strides, {len(box)} box dims")
    if spec["dtype"] not in DATA_TYPE: why.append(f"no TMA data type for {spec['dtype']}")
    if swz not in SWIZZLE: why.append(f"no {swz}-byte swizzle")
    if strides and strides[0] != 1: why.append("dimension 0 must be contiguous (stride 1)")
    if addr % 16: why.append(f"global address {addr:#x} is not 16-byte aligned")
    why += [f"stride {s} bytes is not a 16-byte multiple below 2^40" for s in stride_bytes if s % 16 or not 0 < s < 1 << 40]
    why += [f"dimension of {n} elements not in 1..2^32" for n in dims if not 1 <= n <= 1 << 32]
    why += [f"box dimension {b} not in 1..256" for b in box if not 1 <= b <= 256]
    if box and (box[0] * isz) % 16: why.append(f"box rows of {box[0] * isz} bytes are not a 16-byte multiple")
    if box and swz and box[0] * isz > swz: why.append(f"box rows of {box[0] * isz} bytes exceed the {swz}-byte swizzle")
    if why: raise ValueError("tensor map: " + "; ".join(why))
    return {"tensorDataType": DATA_TYPE[spec["dtype"]], "tensorRank": rank, "globalAddress": addr, "globalDim": dims,
            "globalStrides": stride_bytes, "boxDim": box, "elementStrides": [1] * rank, "interleave": INTERLEAVE,
            "swizzle": SWIZZLE[swz], "l2Promotion": L2_PROMOTION, "oobFill": OOB_FILL}


# ---- rendering ---------------------------------------------------------------------------
def params(p: Program) -> list[str]:
    return [f"const __grid_constant__ CUtensorMap tmap{j}" for j in range(len(tensor_maps(p)))]


def render_stmt(r, s) -> None:
    """Emit ``s`` through the renderer ``r`` (backends/cuda/render._Renderer)."""
    if isinstance(s, Mbarriers):
        pass  # declared with the shared buffers (wgmma.shared_decls)
    elif isinstance(s, MbarInit):
        r.emit(f"mbar_init(&{s.bar}[{r.expr(s.index)}], {s.count}u);")
    elif isinstance(s, MbarArriveTx):
        if s.bytes: r.emit(f"mbar_arrive_tx(&{s.bar}[{r.expr(s.index)}], {s.bytes}u);")
        else: r.emit(f"mbar_arrive(&{s.bar}[{r.expr(s.index)}]);")
    elif isinstance(s, MbarWait):
        r.emit(f"mbar_wait(&{s.bar}[{r.expr(s.index)}], (unsigned)({r.expr(s.parity)}));")
    elif isinstance(s, TmaLoad):
        _copy(r, s)
    else:
        raise ValueError(f"not a TMA statement: {type(s).__name__}")


def _copy(r, s: TmaLoad) -> None:
    j = tensor_maps(r.p).index(s.map)
    n = s.map.rank
    coords = ", ".join(f"%{2 + i}" for i in range(n))
    ops = ", ".join(f'"r"((int)({r.expr(c)}))' for c in s.coords)
    ptx = (f"cp.async.bulk.tensor.{n}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
           f"[%0], [%1, {{{coords}}}], [%{2 + n}];\\n")
    r.emit(f'asm volatile("{ptx}" :: "r"(smem_u32(&{s.name}[{r.expr(s.dst)}])), '
           f'"l"(reinterpret_cast<unsigned long long>(&tmap{j})), {ops}, "r"(smem_u32(&{s.bar}[{r.expr(s.index)}])) : "memory");')
