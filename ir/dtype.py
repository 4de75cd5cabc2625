"""Scalar data types shared by the IR, the references and every backend."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int
    kind: str  # 'f' float, 'i' signed int, 'u' unsigned int, 'b' bool
    c: str  # C / CUDA spelling

    @property
    def is_float(self) -> bool: return self.kind == "f"
    @property
    def is_int(self) -> bool: return self.kind in "iu"

    @property
    def np(self) -> np.dtype:
        """numpy storage dtype (bfloat16 is stored as its uint16 bit pattern)."""
        return np.dtype(np.uint16) if self is bfloat16 else np.dtype(_NP[self.name])

    def __repr__(self) -> str: return f"dtypes.{self.name}"
    def __reduce__(self): return (dtype_by_name, (self.name,))


float32 = DType("float32", 4, "f", "float")
float16 = DType("float16", 2, "f", "half")
bfloat16 = DType("bfloat16", 2, "f", "bf16")
int8 = DType("int8", 1, "i", "signed char")
uint8 = DType("uint8", 1, "u", "unsigned char")
int32 = DType("int32", 4, "i", "int")
bool_ = DType("bool", 1, "b", "bool")
float64 = DType("float64", 8, "f", "double")  # references only

ALL = {d.name: d for d in (float32, float16, bfloat16, int8, uint8, int32, bool_, float64)}
_NP = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
       "int32": np.int32, "bool": np.bool_, "float64": np.float64}


def dtype_by_name(name: str) -> DType:
    try:
        return ALL[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (known: {', '.join(ALL)})") from None


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float array -> bfloat16 bit patterns (uint16), round to nearest even."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = b + (0x7FFF + ((b >> 16) & 1))
    out = (rounded >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), out)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_storage(x: np.ndarray, dt: DType) -> np.ndarray:
    """Cast float/int values to dt's numpy storage (rounding bf16 properly)."""
    if dt is bfloat16:
        return to_bf16_bits(np.asarray(x, dtype=np.float32))
    return np.asarray(x).astype(dt.np)


def to_values(a: np.ndarray, dt: DType) -> np.ndarray:
    """Storage -> numeric values (bf16 bit patterns become float32)."""
    return from_bf16_bits(a) if dt is bfloat16 else a


def least_upper(a: DType, b: DType) -> DType:
    """Result dtype of a binary op: floats win, wider wins."""
    if a is b: return a
    if a.is_float != b.is_float: return a if a.is_float else b
    if a.kind == "b": return b
    if b.kind == "b": return a
    return a if a.itemsize >= b.itemsize else b
