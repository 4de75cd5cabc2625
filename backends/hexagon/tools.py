"""Hexagon toolchain: compile HVX C with clang, link with ld.lld, run under qemu-hexagon.

No Hexagon libc exists on a normal Linux host, so every program is freestanding: the
start-up below provides ``_start``, raw Linux syscalls (``trap0(#1)``, the generic
syscall numbers: read 63, write 64, exit_group 94) and the few memory helpers the
compiler may call. A program reads its inputs from stdin and writes its output bytes to
stdout; the host side packs and unpacks them with numpy.

Every failure is returned as a ``backends.base.Failure`` (compile, crash, timeout) so
that one bad candidate never takes the caller down.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..base import Failure

CPU = "hexagonv66"
CFLAGS = ("--target=hexagon", f"-mcpu={CPU}", "-mhvx", "-mhvx-length=128b", "-O2",
          "-ffreestanding", "-nostdlib", "-fno-stack-protector")
HVX_BYTES = 128

STARTUP = r"""
#include <stdint.h>
#include <hexagon_types.h>
#include <hvx_hexagon_protos.h>

static long so_syscall3(long nr, long a, long b, long c) {
  register long r0 __asm__("r0") = a; register long r1 __asm__("r1") = b;
  register long r2 __asm__("r2") = c; register long r6 __asm__("r6") = nr;
  __asm__ volatile("trap0(#1)" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r6) : "memory");
  return r0;
}
static void so_exit(int code) { so_syscall3(94, code, 0, 0); for (;;) {} }
static int so_read_all(void *dst, long n) {
  char *p = (char *)dst;
  while (n > 0) { long r = so_syscall3(63, 0, (long)p, n); if (r <= 0) return -1; p += r; n -= r; }
  return 0;
}
static int so_write_all(const void *src, long n) {
  const char *p = (const char *)src;
  while (n > 0) { long r = so_syscall3(64, 1, (long)p, n); if (r <= 0) return -1; p += r; n -= r; }
  return 0;
}
/* the compiler may emit calls to these even when freestanding */
void *memset(void *d, int c, unsigned long n) { volatile char *p = d; while (n--) *p++ = (char)c; return d; }
void *memcpy(void *d, const void *s, unsigned long n) {
  volatile char *p = d; const char *q = s; while (n--) *p++ = *q++; return d; }
void *memmove(void *d, const void *s, unsigned long n) {
  volatile char *p = d; const char *q = s;
  if (p < q) { while (n--) *p++ = *q++; } else { p += n; q += n; while (n--) *--p = *--q; }
  return d; }
/* float division: the compiler calls __hexagon_divsf3 (compiler-rt), which no Debian
   package ships for hexagon. IEEE binary32 division, round to nearest even, from integer
   shifts and compares only (a long division of the mantissas; hexagon has no divide). */
typedef union { float f; uint32_t u; } so_fu;
static float so_bits(uint32_t u) { so_fu x; x.u = u; return x.f; }
float __hexagon_divsf3(float fa, float fb) {
  so_fu a, b; a.f = fa; b.f = fb;
  uint32_t sign = (a.u ^ b.u) & 0x80000000u, ma = a.u & 0x7fffffu, mb = b.u & 0x7fffffu;
  int ea = (a.u >> 23) & 0xff, eb = (b.u >> 23) & 0xff;
  if (ea == 255 && ma) return so_bits(a.u | 0x400000u);          /* NaN operands stay NaN */
  if (eb == 255 && mb) return so_bits(b.u | 0x400000u);
  if (ea == 255) return so_bits(eb == 255 ? 0x7fc00000u : sign | 0x7f800000u);
  if (eb == 255) return so_bits(sign);
  if (!ea && !ma) return so_bits(!eb && !mb ? 0x7fc00000u : sign);
  if (!eb && !mb) return so_bits(sign | 0x7f800000u);
  if (ea) ma |= 0x800000u; else { ea = 1; while (!(ma & 0x800000u)) { ma <<= 1; ea--; } }
  if (eb) mb |= 0x800000u; else { eb = 1; while (!(mb & 0x800000u)) { mb <<= 1; eb--; } }
  int e = ea - eb + 127;
  if (ma < mb) { ma <<= 1; e--; }                                   /* quotient in [1, 2) */
  uint32_t q = 0, r = ma;
  for (int i = 0; i < 26; i++) { q <<= 1; if (r >= mb) { r -= mb; q |= 1; } r <<= 1; }
  int sticky = r != 0, shift = e >= 1 ? 0 : 1 - e;                  /* subnormal: shift further */
  if (shift > 27) shift = 27;
  uint32_t mant = q >> (2 + shift), guard = (q >> (1 + shift)) & 1;
  sticky |= (q & ((1u << (1 + shift)) - 1)) != 0;
  if (guard && (sticky || (mant & 1))) mant++;
  if (shift) return so_bits(sign | mant);                           /* a carry makes it the least normal */
  if (mant == 0x1000000u) { mant >>= 1; e++; }
  if (e >= 255) return so_bits(sign | 0x7f800000u);
  return so_bits(sign | ((uint32_t)e << 23) | (mant & 0x7fffffu));
}
int so_main(void);
void _start(void) { so_exit(so_main()); }
"""


@dataclass(frozen=True)
class Tools:
    clang: str
    lld: str
    qemu: str


def find_tools() -> Tools | None:
    """The three tools, or None when any is missing."""
    found = [shutil.which(n) for n in ("clang", "ld.lld", "qemu-hexagon-static")]
    if not found[2]: found[2] = shutil.which("qemu-hexagon")
    return Tools(*found) if all(found) else None  # type: ignore[arg-type]


def missing_message() -> str:
    return ("Hexagon tools not found (need clang, ld.lld and qemu-hexagon-static; "
            "on Debian: apt-get install clang lld qemu-user-static)")


def _tail(s: str, n: int = 2000) -> str: return s if len(s) <= n else "..." + s[-n:]


def _workdir() -> Path:
    base = Path(os.environ.get("SUPEROPT_CACHE_DIR") or tempfile.gettempdir()) / "hexagon-build"
    base.mkdir(parents=True, exist_ok=True)
    return base


def compile_program(source: str, timeout: float = 120.0, opt: str = "-O2") -> Path | Failure:
    """C source (without the start-up) -> a static Hexagon executable (cached by content and
    flags); ``opt`` replaces ``CFLAGS``' optimization level."""
    tools = find_tools()
    if tools is None: return Failure("compile", missing_message())
    flags = tuple(opt if f == "-O2" else f for f in CFLAGS)
    full = STARTUP + source
    key = hashlib.sha256((" ".join(flags) + "\n" + full).encode()).hexdigest()[:20]
    d = _workdir()
    exe = d / f"{key}.elf"
    if exe.exists(): return exe
    src, obj = d / f"{key}.c", d / f"{key}.o"
    src.write_text(full)
    try:
        r = subprocess.run([tools.clang, *flags, "-c", str(src), "-o", str(obj)],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode: return Failure("compile", _tail(r.stderr))
        tmp = d / f"{key}.{os.getpid()}.tmp"
        r = subprocess.run([tools.lld, "-static", "-e", "_start", str(obj), "-o", str(tmp)],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode: return Failure("compile", _tail(r.stderr))
        os.replace(tmp, exe)
    except subprocess.TimeoutExpired:
        return Failure("timeout", f"compiler ran longer than {timeout:.0f}s")
    except OSError as e:
        return Failure("compile", str(e))
    return exe


def compile_o3(source: str, timeout: float = 120.0) -> Path | Failure:
    """``compile_program`` at -O3: the plain scalar C baselines' flag (the assembly kernels
    built the same way are unaffected by it)."""
    return compile_program(source, timeout, opt="-O3")


def assembly(source: str, timeout: float = 120.0) -> str | Failure:
    """``clang -S`` output of the program (start-up included): what LLVM's packetizer made."""
    tools = find_tools()
    if tools is None: return Failure("compile", missing_message())
    try:
        r = subprocess.run([tools.clang, *CFLAGS, "-S", "-x", "c", "-", "-o", "-"], input=STARTUP + source,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Failure("timeout", f"compiler ran longer than {timeout:.0f}s")
    return Failure("compile", _tail(r.stderr)) if r.returncode else r.stdout


def run_program(exe: Path, stdin: bytes, out_bytes: int, timeout: float = 60.0) -> bytes | Failure:
    """Run under qemu; the program must exit 0 and write exactly ``out_bytes`` bytes."""
    r = run_counted(exe, stdin, out_bytes, timeout)
    return r if isinstance(r, Failure) else r[0]


_COUNTERS = re.compile(rb"so-counters (\d+) (\d+) (\d+)")


def run_counted(exe: Path, stdin: bytes, out_bytes: int, timeout: float = 60.0) -> tuple[bytes, tuple[int, int, int] | None] | Failure:
    """``run_program`` plus qemu's counters around the kernel call, as the rendered entry
    prints them on stderr: (packets, instructions, HVX instructions) = c20, c21, c22
    deltas less the deltas of an empty read pair; None when the program printed none."""
    r = run_counted_err(exe, stdin, out_bytes, timeout)
    return r if isinstance(r, Failure) else r[:2]


def run_counted_err(exe: Path, stdin: bytes, out_bytes: int, timeout: float = 60.0) -> tuple[bytes, tuple[int, int, int] | None, bytes] | Failure:
    """``run_counted`` with the program's stderr (where a network prints its per-layer counts)."""
    tools = find_tools()
    if tools is None: return Failure("launch", missing_message())
    try:
        r = subprocess.run([tools.qemu, str(exe)], input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Failure("timeout", f"ran longer than {timeout:.0f}s under qemu")
    except OSError as e:
        return Failure("launch", str(e))
    if r.returncode < 0 or r.returncode > 128:
        return Failure("crash", f"exit status {r.returncode}; {_tail(r.stderr.decode(errors='replace'), 500)}")
    if r.returncode: return Failure("crash", f"exit status {r.returncode}")
    if len(r.stdout) != out_bytes:
        return Failure("crash", f"wrote {len(r.stdout)} bytes, expected {out_bytes}")
    m = _COUNTERS.search(r.stderr)
    return r.stdout, (tuple(int(x) for x in m.groups()) if m else None), r.stderr  # type: ignore[return-value]


def tool_versions() -> dict[str, str]:
    tools = find_tools()
    if tools is None: return {}
    out = {}
    for name, path in zip(("clang", "ld.lld", "qemu"), (tools.clang, tools.lld, tools.qemu)):
        try:
            line = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            line = "?"
        out[name] = re.sub(r"\s+", " ", line).strip()
    return out
