"""One binary per network (issue 29): every layer of a ``kernels.dsp_models.Net`` in one
freestanding Hexagon program, run once under qemu.

Each convolution is the HVX template its family's solver picks (``mode="ours"``) or its
hand rule (``"hand"``): the 3->32 stride-2 first layer ``hvx_firstlayer``, the 64-channel
depthwise 3x3 ``hvx_depthwise``, every 1x1 convolution and the fully connected layer (a 1x1
convolution of the pooled 1x1 map) ``hvx_gemm``. Their assembly is emitted as the standalone
templates emit it, with the symbol and labels renamed per layer. ReLU6, the residual add and
the average pool are ``hvx_eltwise``; ReLU6 and a 1x1 project's residual add fuse into the
conv's epilogue where the packet model prices that below the separate pass (``choose``). ``mode="plain"`` is the same network as plain C loops
(``clang --target=hexagon -mhvx -O2``, tinygrad's route to the DSP).

Weights are packed once on the host (the numpy twins of the templates' packers), read from
stdin with the image before the counted region; activations stay in static buffers between
layers. qemu's packet counter (c20) is read before and after every layer (the cost of an
empty read pair subtracted); the program prints ``so-layers p0 p1 ..`` and the totals
(``so-counters``: packets, instructions, HVX instructions) on stderr, and every layer's
output bytes on stdout, so each layer is checked against the numpy reference.

``net`` is a ``kernels.dsp_models.Net``, passed in (backends do not import the workload
library): its layers, shapes and ``layer_kernel(i)``, the qconv2d kernel a family prices.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from . import asm_depthwise, asm_firstlayer, asm_gemm, hvx_eltwise, tools
from .render import COUNTERS

SLACK = 512                     # bytes before every activation buffer (the kernels' peeled loads)
TAIL = 512 + 32 * 128           # and after (the correction pass reads whole 32-pixel blocks)
_LAYERS = re.compile(rb"so-layers((?: \d+)*)")


def kind(ly) -> str:
    """Which template runs a convolution layer."""
    if ly.k == 3 and ly.stride == 2 and ly.cin == 3 and ly.cout == 32 and ly.groups == 1: return "hvx_firstlayer"
    if ly.k == 3 and ly.groups == ly.cin == ly.cout: return "hvx_depthwise"
    if ly.k == 1 and ly.groups == 1: return "hvx_gemm"
    raise ValueError(f"layer {ly.name}: no HVX template for a {ly.k}x{ly.k} conv, groups {ly.groups}")


def _family(name: str):
    from ...search.families import hvx, hvx_depthwise, hvx_firstlayer
    return {"hvx_gemm": hvx, "hvx_depthwise": hvx_depthwise, "hvx_firstlayer": hvx_firstlayer}[name]


_CHOICES: dict = {}


def residual_consumer(net, i: int) -> int | None:
    """The add layer that is conv layer i's only consumer, as its second operand (the
    residual add after a linear 1x1 project): what can fuse into i's epilogue; else None."""
    users = [k for k, ly in enumerate(net.layers) if i in ly.src]
    if len(users) != 1 or net.layers[i].relu or kind(net.layers[i]) != "hvx_gemm": return None
    a = net.layers[users[0]]
    return users[0] if a.op == "add" and a.src[1] == i and a.src[0] != i else None


def choose(net, i: int, mode: str, machine, timeout_s: float = 30.0) -> dict:
    """(family, geometry, params, modeled packets, epilogue) of conv layer i: the solver's pick or
    the hand rule. The geometry is the matcher's, with the network's calibrated requantize
    shifts. A layer followed by a separate pass that its epilogue can take (``mode="ours"``):
    ReLU6, or the residual add with requantize of ``residual_consumer``: each of the solver's
    top points priced with the pass fused into its epilogue (the pass in the geometry: the
    template's packets, packed) and with the separate pass (its packets plus
    ``hvx_eltwise.clamp_packets`` / ``add_packets``, as qemu counts them); the cheapest wins and
    is emitted as decided. The hand rule keeps the separate pass."""
    from ...search.machine import load
    ly = net.layers[i]
    fname = kind(ly)
    fam = _family(fname)
    k = net.layer_kernel(i)
    g = dict(fam.tpl.match(k))
    g.update(pre=ly.q["pre"], post=ly.q["post"])
    add = residual_consumer(net, i)
    key = (fname, mode, ly.relu, add is not None and tuple(sorted(net.layers[add].q.items())), tuple(sorted(g.items())))
    if key not in _CHOICES:
        m = machine or load("hexagon")
        if mode == "ours":   # a large layer's first pricing can outlast the budget: grant it more once
            sol = fam.FAMILY.solve(k, m, timeout_s)
            sol = sol if sol.candidates else fam.FAMILY.solve(k, m, 4 * timeout_s)
            if not sol.candidates: raise RuntimeError(f"layer {ly.name}: the {fname} solver priced no point")
            points = [dict(c.schedule.params) for c in sol.candidates]
        else:
            points = [dict(fam.FAMILY.hand(k, m).params)]
        n = int(np.prod(net.shape(i)))
        if add is not None:
            q = net.layers[add].q
            _CHOICES[key] = fuse_choice(fam, fname, g, points, hvx_eltwise.add_packets(n), mode == "ours",
                                        {"add": 1, "add_ma": q["ma"], "add_mb": q["mb"], "add_s": q["s"]}, add)
        else:
            clamp = hvx_eltwise.clamp_packets(n) if ly.relu else 0
            _CHOICES[key] = fuse_choice(fam, fname, g, points, clamp, ly.relu and mode == "ours")
    return _CHOICES[key]


def fuse_choice(fam, fname: str, g: dict, points: list[dict], sep: int, may_fuse: bool,
                fused: dict | None = None, into: int | None = None) -> dict:
    """The cheapest of ``points`` under the packet model, each followed by the separate pass of
    ``sep`` packets (0: none) or, where ``may_fuse`` and the template takes it, with that pass
    fused into its epilogue: the geometry updated by ``fused`` (default ReLU6: relu 1). ``into``:
    the layer whose output a fused epilogue writes (the add's), recorded in the choice."""
    fused = fused or {"relu": 1}
    options = []
    for p in points:
        options.append((int(fam.modeled_packets(g, p)) + sep, "separate" if sep else "none", g, p))
        gf = {**g, **fused}
        if may_fuse and sep and not fam.tpl.check(gf, p):
            options.append((int(fam.modeled_packets(gf, p)), "fused", gf, p))
    total, epi, geo, p = min(options, key=lambda o: o[0])
    alt = {e: t for t, e, _, q in options if q == p}
    return {"family": fname, "geometry": geo, "params": p, "modeled_packets": int(fam.modeled_packets(geo, p)),
            "epilogue": epi, "pass": "add" if "add" in fused else "relu", "into": into if epi == "fused" else None,
            "pass_packets": sep if epi == "separate" else 0,
            "priced": {"fused": alt.get("fused"), "separate": alt.get("separate")} if sep else {}}


_TOKEN = re.compile(r"(?<![\w.])\.?[A-Za-z_]\w*")   # a whole symbol or label (.Lk12, hvx_kernel, g_corr)


def _rename(text: str, names: list[str], prefix: str) -> str:
    """Every whole occurrence of ``names`` renamed for the layer: a local label stays local
    (.L...), a symbol gets the layer's prefix. One pass over the text: a 192x192 layer's code
    emitted straight holds thousands of loop labels (one regex pass per name was quadratic)."""
    table = {n: "." + prefix + n[1:] if n.startswith(".") else prefix + n for n in names}
    return _TOKEN.sub(lambda m: table.get(m.group(0), m.group(0)), text)


def _esc(asm: str) -> str: return asm.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n\"\n\"")


@dataclass
class Program:
    source: str
    stdin: bytes
    out_sizes: list[int]
    choices: dict = field(default_factory=dict)   # layer index -> choose()
    absent: set = field(default_factory=set)      # layers whose output is never stored (fused into a consumer's)


# A whole network's code (every tile and row emitted straight) outgrows a direct call's
# reach (ld.lld's R_HEX_B22_PCREL: +-2 MiB at 192x192): every layer call goes through its
# absolute address (a ## constant and callr), hidden from clang so it cannot fold it back.
FAR = """static inline __attribute__((always_inline)) void *so_far(void *p) { __asm__("" : "+r"(p)); return p; }
#define SO_FAR(f) ((__typeof__(&f))so_far((void *)&f))
"""
_CALL = re.compile(r"(^|\s)(L\d+_\w+|so_clamp0|so_add_rq|so_avgpool)\(", re.M)


def _far(call: str) -> str: return _CALL.sub(r"\1SO_FAR(\2)(", call)


def _buf(i: int) -> str: return "X_img" if i < 0 else f"X{i}"


# ---- per-layer code of the HVX binary ------------------------------------------------------
def _gemm(i: int, c: dict, src: str, dst: str, q: dict, res: str = "0") -> tuple[str, str, bytes, list[str]]:
    g, p = c["geometry"], c["params"]
    text = asm_gemm.emit(g, p)
    asm = _rename(text, [asm_gemm.ENTRY] + sorted(set(re.findall(r"\.Lk\d+", text))), f"L{i}_")
    jj = asm_gemm.interleave(p)
    packed = asm_gemm.prepack(g, q["w"].reshape(-1), jj)
    decl = [f'__asm__("{_esc(asm)}");',
            f"void L{i}_{asm_gemm.ENTRY}(const void *, const uint8_t *, int32_t *, const int32_t *, const int32_t *, const int8_t *);",
            f"static uint8_t L{i}_bp[{packed.size + 256}] __attribute__((aligned(128)));"]
    reads = [f"so_read_all(L{i}_bp, {packed.size})"]
    data = packed.tobytes()
    corr, qp, out, post = "0", "0", f"(int32_t *){dst}", ""
    if p["corr"]:
        corr_c = asm_gemm._c_corr(g, src)
        decl.append(_rename(corr_c, ["g_corr", "g_px", "g_ps", "g_h", "so_corr", "so_uvw"], f"L{i}_"))
        corr = f"L{i}_g_corr"
    if p["fuse"]:
        j = p["blocks"]
        lo = q["mult"][:j * 32].astype(np.uint32) & 0xFFFF
        qpv = np.concatenate([q["bias"][:j * 32].astype(np.int32), (lo | (lo << 16)).astype(np.int32)])
        decl.append(f"static int32_t L{i}_qp[{qpv.size}] __attribute__((aligned(128)));")
        reads.append(f"so_read_all(L{i}_qp, {qpv.nbytes})")
        data += qpv.tobytes()
        qp = f"L{i}_qp"
    else:   # int32 accumulators, then the HVX requantize pass (asm_gemm's, on this layer's buffers)
        n = g["n"]
        decl += [f"static int32_t L{i}_acc[{g['m'] * g['c_rs'] + 32}] __attribute__((aligned(128)));",
                 f"static int32_t L{i}_bias[{n}] __attribute__((aligned(128))), L{i}_mult[{n}] __attribute__((aligned(128)));"]
        reads += [f"so_read_all(L{i}_bias, {4 * n})", f"so_read_all(L{i}_mult, {4 * n})"]
        data += q["bias"].astype(np.int32).tobytes() + q["mult"].astype(np.int32).tobytes()
        out = f"L{i}_acc"
        post = (f"  for (int p = 0; p < {g['m']}; p++) for (int nb = 0; nb < {n // 32}; nb++) {{\n"
                f"    HVX_Vector acc = *(const HVX_Vector *)(L{i}_acc + p * {g['c_rs']} + nb * 32);\n"
                f"    HVX_Vector v = so_requant(Q6_Vw_vadd_VwVw(acc, *(const HVX_Vector *)(L{i}_bias + nb * 32)),"
                f" *(const HVX_Vector *)(L{i}_mult + nb * 32), {g['pre']}, {g['post']});\n"
                + ("    v = Q6_Vb_vmax_VbVb(v, Q6_V_vzero());   /* ReLU6 fused into this pass */\n" if g.get("relu") else "")
                + f"    so_vstore_masked({dst} + p * {n} + nb * 32, v, so_first(32), 32);\n  }}\n")
    call = (f"  L{i}_so_corr();\n" if p["corr"] else "") + \
        f"  L{i}_{asm_gemm.ENTRY}({src}, L{i}_bp, {out}, {corr}, {qp}, {res});\n" + post
    return "\n".join(decl) + "\n", call, data, reads


def _dw(i: int, c: dict, src: str, dst: str, q: dict):
    g, p = c["geometry"], c["params"]
    text = asm_depthwise.emit_asm(g, p)
    asm = _rename(text, ["dw_asm"] + sorted(set(re.findall(r"\.Ldw\d+", text))), f"L{i}_")
    wt = q["w"].reshape(64, 9).astype(np.int16)
    wp = np.zeros(9 * 64 + (4 if g.get("relu") else 3) * 64, np.int16)   # a fused ReLU6's zero vector last
    wp[:9 * 64] = wt.T.reshape(-1)                                          # [tap][channel]
    b = q["bias"].astype(np.int32)
    wp[9 * 64:9 * 64 + 128] = np.concatenate([b[0::2], b[1::2]]).view(np.int16)   # even channels, then odd
    wp[9 * 64 + 128:9 * 64 + 192] = q["mult"].astype(np.int16)
    decl = f'__asm__("{_esc(asm)}");\nvoid L{i}_dw_asm(const int8_t*, const int16_t*, int8_t*, const int8_t*);\n' \
           f"static int16_t L{i}_wp[{wp.size}] __attribute__((aligned(128)));\n"
    return decl, f"  L{i}_dw_asm({src}, L{i}_wp, {dst}, so_zero + 256);\n", wp.tobytes(), [f"so_read_all(L{i}_wp, {wp.nbytes})"]


def _fl(i: int, c: dict, src: str, dst: str, q: dict):
    from ...search.families import hvx_firstlayer as fam
    g, p = c["geometry"], c["params"]
    text = asm_firstlayer.emit_asm(g, p)
    asm = _rename(text, ["fl_asm"] + sorted(set(re.findall(r"\.Lf[abm]\d+", text))), f"L{i}_")
    w = q["w"].astype(np.int16).reshape(32, 27)            # [k][dy*9 + dx*3 + c]
    wp = np.full((2, 3, 3, 32, 4), 128, np.uint8)         # [par][dy][word][lane][byte] = w + 128, 128 where no tap
    for par in range(2):
        for word in range(3):
            for byte in range(4):
                rel = 4 * word + byte + (-3 if par else -1)
                if 0 <= rel < 9:
                    for dy in range(3): wp[par, dy, word, :, byte] = (w[:, dy * 9 + rel] + 128).astype(np.uint8)
    m = q["mult"].astype(np.int16)
    tail = np.concatenate([q["bias"].astype(np.int32).view(np.uint8), np.repeat(m, 2).view(np.uint8),
                           np.zeros(128 if g.get("relu") else 0, np.uint8)])   # a fused ReLU6's zero vector
    data = np.concatenate([wp.reshape(-1), tail])
    lay = fam.scratch_layout(g["w"], p["pre"])
    decl = f'__asm__("{_esc(asm)}");\nvoid L{i}_fl_asm(const int8_t*, const uint8_t*, int8_t*, const int8_t*, int32_t*);\n' \
           f"static uint8_t L{i}_wp[{data.size + 256}] __attribute__((aligned(128)));\n" \
           f"static int32_t L{i}_s[{lay['bytes'] // 4}] __attribute__((aligned(128)));\n"
    return decl, f"  L{i}_fl_asm({src}, L{i}_wp, {dst}, so_zero + 128, L{i}_s);\n", data.tobytes(), \
        [f"so_read_all(L{i}_wp, {data.size})"]


# ---- per-layer code of the plain C binary --------------------------------------------------
def _plain_conv(i: int, net, src: str, dst: str, q: dict):
    ly = net.layers[i]
    h, w, cin = net.shape(ly.src[0])
    oh, ow, k = net.shape(i)
    cg = cin // ly.groups
    kg = k // ly.groups
    decl = (f"static int8_t L{i}_w[{q['w'].size}];\nstatic int32_t L{i}_b[{k}], L{i}_m[{k}];\n")
    body = f"""  for (int y = 0; y < {oh}; y++) for (int x = 0; x < {ow}; x++) for (int o = 0; o < {k}; o++) {{
    int acc = 0, g = o / {kg};
    for (int dy = 0; dy < {ly.k}; dy++) {{ int iy = y * {ly.stride} + dy - {ly.pad}; if (iy < 0 || iy >= {h}) continue;
      for (int dx = 0; dx < {ly.k}; dx++) {{ int ix = x * {ly.stride} + dx - {ly.pad}; if (ix < 0 || ix >= {w}) continue;
        const int8_t *xp = {src} + (iy * {w} + ix) * {cin} + g * {cg}, *wp = L{i}_w + ((o * {ly.k} + dy) * {ly.k} + dx) * {cg};
        for (int c = 0; c < {cg}; c++) acc += xp[c] * wp[c]; }} }}
    int v = (acc + L{i}_b[o] + (1 << {ly.q['pre'] - 1})) >> {ly.q['pre']}; v = v < -32768 ? -32768 : v > 32767 ? 32767 : v;
    v = (2 * v * L{i}_m[o] + (1 << 15)) >> 16; v = (v + (1 << {ly.q['post'] - 1})) >> {ly.q['post']};
    {dst}[(y * {ow} + x) * {k} + o] = v < {0 if ly.relu else -128} ? {0 if ly.relu else -128} : v > 127 ? 127 : v;
  }}
"""
    data = q["w"].astype(np.int8).tobytes() + q["bias"].astype(np.int32).tobytes() + q["mult"].astype(np.int32).tobytes()
    reads = [f"so_read_all(L{i}_w, {q['w'].size})", f"so_read_all(L{i}_b, {4 * k})", f"so_read_all(L{i}_m, {4 * k})"]
    return decl, body, data, reads


def build(net, x: np.ndarray, mode: str = "ours", machine=None, solve_s: float = 30.0) -> Program:
    """The whole network's program and its stdin (image, then each layer's packed constants)."""
    if mode not in ("ours", "hand", "plain"): raise ValueError(f"mode {mode!r}: ours, hand or plain")
    if net.variant != "int8": raise ValueError("the DSP binary runs the int8 variant (symmetric activations)")
    n = len(net.layers)
    sizes = [int(np.prod(net.shape(i))) for i in range(n)]
    decl = [f"static int8_t so_img[{x.size + SLACK + TAIL}] __attribute__((aligned(128)));",
            f"#define X_img (so_img + {SLACK})"]
    decl += [f"static int8_t so_a{i}[{s + SLACK + TAIL}] __attribute__((aligned(128)));\n#define X{i} (so_a{i} + {SLACK})"
             for i, s in enumerate(sizes)]
    zero = max(net.shape(i)[1] * net.shape(i)[2] for i in range(-1, n)) + 1024
    decl.append(f"static int8_t so_zero[{zero}] __attribute__((aligned(128)));")
    calls, reads, data, choices = [], [f"so_read_all(X_img, {x.size})"], [x.astype(np.int8).tobytes()], {}
    absent: set[int] = set()
    done: set[int] = set()     # add layers computed in their producer's epilogue
    for i, ly in enumerate(net.layers):
        src, dst = _buf(ly.src[0]), _buf(i)
        if i in done:
            c = ""
        elif ly.op == "conv":
            if mode == "plain":
                d, c, b, r = _plain_conv(i, net, src, dst, ly.q)
            else:
                choices[i] = ch = choose(net, i, mode, machine, solve_s)
                if ch["into"] is not None:   # the residual add in this conv's epilogue: it writes the add's output
                    a = ch["into"]
                    absent.add(i)
                    done.add(a)
                    d, c, b, r = _gemm(i, ch, src, _buf(a), ly.q, _buf(net.layers[a].src[0]))
                else:
                    d, c, b, r = {"hvx_gemm": _gemm, "hvx_depthwise": _dw, "hvx_firstlayer": _fl}[ch["family"]](i, ch, src, dst, ly.q)
                if ch["epilogue"] == "separate" and ch["pass"] == "relu": c += "  " + hvx_eltwise.clamp_call(dst, sizes[i]) + "\n"
            decl.append(d)
            reads += r
            data.append(b)
        elif ly.op == "add":
            c = "  " + hvx_eltwise.add_call(src, _buf(ly.src[1]), dst, sizes[i], ly.q["ma"], ly.q["mb"], ly.q["s"]) + "\n"
        else:
            ph, pw, pc = net.shape(ly.src[0])
            c = "  " + hvx_eltwise.pool_call(src, dst, ph * pw, pc, ly.q["m"], ly.q["post"]) + "\n"
        calls.append(f"  so_pk[{i}] = so_c20();\n{_far(c)}")
    calls.append(f"  so_pk[{n}] = so_c20();\n")
    head = "typedef int vi __attribute__((vector_size(128)));\n"
    if mode != "plain":
        from . import requant
        head += requant.HVX_BASE.replace("LANES", "32") + requant.HELPERS
    head += (hvx_eltwise.PLAIN if mode == "plain" else hvx_eltwise.C) + "\n".join(COUNTERS) + "\n"
    head += FAR
    head += f"""static unsigned so_pk[{n + 1}];
static inline __attribute__((always_inline)) unsigned so_c20(void) {{
  register unsigned r0 __asm__("r0"); __asm__ volatile(".word 0x6a14c000" : "=r"(r0) :: "memory"); return r0; }}
"""
    writes = "".join(f"  if (so_write_all(X{i}, {s})) return 4;\n" for i, s in enumerate(sizes))
    main = f"""
__attribute__((noinline)) void so_net(void) {{
{"".join(calls)}}}
static void so_layers_out(unsigned empty) {{
  static char buf[{16 * n + 32}]; int k = 0; const char *h = "so-layers"; while (*h) buf[k++] = *h++;
  for (int i = 0; i < {n}; i++) {{ unsigned v = so_pk[i + 1] - so_pk[i] - empty; char d[12]; int m = 0;
    buf[k++] = ' '; do {{ d[m++] = (char)('0' + v % 10); v /= 10; }} while (v); while (m) buf[k++] = d[--m]; }}
  buf[k++] = '\\n'; so_syscall3(64, 2, (long)buf, k);
}}
int so_main(void) {{
  if ({" || ".join(reads)}) return 3;
  unsigned c0[3], c1[3], e0[3], e1[3], p0 = so_c20(), p1 = so_c20();
  so_counters(e0); so_counters(e1);
  so_counters(c0);
  so_net();
  so_counters(c1);
{writes}  {{ unsigned t[3]; for (int i = 0; i < 3; i++) t[i] = (c1[i] - c0[i]) - (e1[i] - e0[i]);
    if (so_counters_out(t)) return 5; }}
  so_layers_out(p1 - p0);
  return 0;
}}
"""
    return Program(head + "\n".join(decl) + "\n" + main, b"".join(data), sizes, choices, absent)


@dataclass
class Run:
    outputs: list[np.ndarray | None]   # None: a layer fused into its consumer's epilogue (never stored)
    packets: list[int]            # per layer (c20 deltas)
    totals: tuple[int, int, int]  # packets, instructions, HVX instructions of the whole network
    choices: dict


def run(net, x: np.ndarray, mode: str = "ours", machine=None, timeout: float = 600.0, solve_s: float = 30.0):
    """Build, compile, run under qemu: a ``Run`` or a ``tools.Failure``."""
    prog = build(net, x, mode, machine, solve_s)
    exe = tools.compile_program(prog.source, timeout=timeout)
    if isinstance(exe, tools.Failure): return exe
    r = tools.run_counted_err(exe, prog.stdin, sum(prog.out_sizes), timeout)
    if isinstance(r, tools.Failure): return r
    data, counts, err = r
    m = _LAYERS.search(err)
    if counts is None or m is None: return tools.Failure("launch", "the network printed no counters")
    outs, off = [], 0
    for i, s in enumerate(prog.out_sizes):
        outs.append(None if i in prog.absent else np.frombuffer(data[off:off + s], np.int8).reshape(net.shape(i)))
        off += s
    return Run(outs, [int(v) for v in m.group(1).split()], counts, prog.choices)
