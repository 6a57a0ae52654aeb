"""Pure numpy weight quantization: blockwise 2/4/8-bit codes laid out for onnxruntime's MatMulNBits and
GatherBlockQuantized, per-channel int8 for DynamicQuantizeMatMul, and their inverses.

Conventions (onnxruntime 1.32, see /work/shared/notes/onnxruntime-cpu-ops.md §2-3):
  a weight W is [N, K] (out, in), like torch nn.Linear.weight; blocks of `block_size` run along K and the
  last block is zero-padded;  W[n, k] ~= (q[n, k] - z[n, k // bs]) * s[n, k // bs],  q in [0, 2^bits - 1];
  symmetric means no stored zero point: z = 2^(bits-1) implicitly.

Methods for choosing the per-block scale (and zero point):
  "rtn"     round to nearest: symmetric s = (value of largest |w|) / -2^(bits-1) (llama.cpp Q4_0's rule),
            asymmetric s = (max - min) / (2^bits - 1).
  "search"  try a grid of scales per block; for each, round, then refit the scale by weighted least squares
            given the codes; keep the one with the least weighted squared error. `importance` (per input
            channel, e.g. E[x_k^2] of the layer's input activations) turns the weight error into an estimate
            of the output error ("activation-aware"); without it every element weighs the same.
Nothing here knows about ONNX graphs; quant/apply.py does the rewriting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALE_EPS = 1e-10          # scales are clamped away from 0 (all-zero blocks would otherwise divide by 0)
METHODS = ("rtn", "search")
_CHUNK_ELEMS = 1 << 22     # rows are processed in chunks of about this many elements (memory bound)


@dataclass(frozen=True)
class BlockQuant:
    """Blockwise codes of a weight W [N, K] (unpacked: one code per uint8)."""

    codes: np.ndarray               # uint8 [N, nb, bs]
    scales: np.ndarray              # float32 [N, nb]
    zero_points: np.ndarray | None  # uint8 [N, nb]; None = symmetric (implicit 2^(bits-1))
    bits: int
    block_size: int
    k: int                          # the true K (before padding)

    @property
    def n_blocks(self) -> int:
        return self.codes.shape[1]


def _check(bits: int, block_size: int) -> None:
    if bits not in (2, 4, 8):
        raise ValueError(f"bits must be 2, 4 or 8, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of 2 and >= 16, got {block_size}")


def to_blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    """[N, K] -> [N, nb, bs] float32, zero-padding the last block."""
    n, k = w.shape
    nb = -(-k // block_size)
    w = np.asarray(w, dtype=np.float32)
    if nb * block_size != k:
        w = np.pad(w, ((0, 0), (0, nb * block_size - k)))
    return w.reshape(n, nb, block_size)


def _candidates(bits: int, symmetric: bool, method: str) -> np.ndarray:
    """Divisors t: symmetric s = m / -t (m = signed absmax), asymmetric s = (max - min) / t."""
    qn = float(1 << (bits - 1))
    top = float((1 << bits) - 1)
    if method == "rtn":
        return np.array([qn if symmetric else top])
    if symmetric:  # t < qn clips nothing and coarsens; t > qn clips the extreme to -qn; t < 0 flips the side
        grid = np.concatenate([np.linspace(qn - 1.5, qn + 2.0, 15), [-(qn - 1), -(qn - 0.5)]])
        return grid.astype(np.float32)
    return np.linspace(top * 0.85, top * 1.25, 17).astype(np.float32)


def _quantize_chunk(x: np.ndarray, imp: np.ndarray, bits: int, symmetric: bool, method: str, refits: int = 1):
    """x [R, nb, bs], imp broadcastable to x -> (codes uint8, scales f32 [R, nb], zp uint8 [R, nb] | None)."""
    qmax = (1 << bits) - 1
    qn = 1 << (bits - 1)
    best_err = np.full(x.shape[:2], np.inf, dtype=np.float32)
    best_q = np.zeros(x.shape, dtype=np.uint8)
    best_s = np.zeros(x.shape[:2], dtype=np.float32)
    best_z = np.full(x.shape[:2], qn, dtype=np.float32)
    if symmetric:
        amax_i = np.abs(x).argmax(axis=2)[..., None]
        m = np.take_along_axis(x, amax_i, axis=2)[..., 0]               # signed extreme [R, nb]
        lo = hi = None
    else:
        lo, hi = x.min(axis=2), x.max(axis=2)
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)                # keep 0 representable
        mid = (lo + hi) * 0.5
    for t in _candidates(bits, symmetric, method):
        if symmetric:
            s = m / -t
            z = np.full_like(s, qn)
        else:
            # widen/narrow the [lo, hi] range around its middle; zero point rounds to an integer code
            s = (hi - lo) / t
            half = s * qmax * 0.5
            s = np.maximum(s, SCALE_EPS)
            z = np.clip(np.rint(-(mid - half) / s), 0, qmax)
        s = np.where(np.abs(s) < SCALE_EPS, SCALE_EPS, s)                # all-zero block
        q = np.clip(np.rint(x / s[..., None]) + z[..., None], 0, qmax)
        qc = q - z[..., None]                                           # signed codes
        if method == "rtn":
            s_fit = s
            err = np.zeros_like(best_err)
        else:
            for it in range(refits):
                if it:   # re-round with the refitted scale, then refit again (alternating minimisation)
                    q = np.clip(np.rint(x / s_fit[..., None]) + z[..., None], 0, qmax)
                    qc = q - z[..., None]
                sxq = (imp * x * qc).sum(axis=2)
                sqq = (imp * qc * qc).sum(axis=2)
                ok = sqq > 0
                s_fit = np.where(ok, sxq / np.where(ok, sqq, 1.0), s)   # least-squares scale given codes
                s_fit = np.where(np.abs(s_fit) < SCALE_EPS, SCALE_EPS, s_fit)
            err = np.where(ok, -sxq * sxq / np.where(ok, sqq, 1.0), 0.0)  # = sum imp*(x-s q)^2 - sum imp x^2
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s_fit, best_s)
        best_z = np.where(better, z, best_z)
        best_q = np.where(better[..., None], q.astype(np.uint8), best_q)
    # symmetric scales keep their sign (Q4_0 style: the extreme maps to code 0 whichever its sign);
    # MatMulNBits and GatherBlockQuantized just multiply by them. Clamp |s| away from 0.
    best_s = (np.where(best_s < 0, -1.0, 1.0) * np.maximum(np.abs(best_s), SCALE_EPS)).astype(np.float32)
    return best_q, best_s, None if symmetric else best_z.astype(np.uint8)


def round_scales(s: np.ndarray, scale_bits: int) -> np.ndarray:
    """Scales as they will be stored: float32, or rounded to float16 (kept away from float16's zero, like
    SCALE_EPS: the smallest float16 subnormal keeps its sign)."""
    if scale_bits == 32:
        return np.asarray(s, np.float32)
    tiny = np.float32(np.finfo(np.float16).smallest_subnormal)
    s = np.asarray(s, np.float32)
    s = np.where(np.abs(s) < tiny, np.where(s < 0, -tiny, tiny), s)
    return s.astype(np.float16).astype(np.float32)


def quantize_blocks(w: np.ndarray, bits: int = 4, block_size: int = 32, *, symmetric: bool = True,
                    method: str = "search", importance: np.ndarray | None = None,
                    scale_bits: int = 32) -> BlockQuant:
    """Quantize W [N, K] blockwise along K. importance: optional [K] non-negative weights of the error.
    scale_bits 16: scales rounded to float16 values (the codes are chosen with the unrounded scale)."""
    _check(bits, block_size)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {w.shape}")
    n, k = w.shape
    blocks = to_blocks(w, block_size)                                   # [N, nb, bs]
    nb = blocks.shape[1]
    if importance is None:
        imp = np.ones((1, nb, block_size), dtype=np.float32)
    else:
        imp = np.asarray(importance, dtype=np.float32).reshape(1, k)
        imp = to_blocks(imp / max(float(imp.mean()), SCALE_EPS) + 1e-3, block_size)  # [1, nb, bs]
    codes = np.empty(blocks.shape, dtype=np.uint8)
    scales = np.empty((n, nb), dtype=np.float32)
    zps = None if symmetric else np.empty((n, nb), dtype=np.uint8)
    rows = max(1, _CHUNK_ELEMS // (nb * block_size))
    for r0 in range(0, n, rows):
        q, s, z = _quantize_chunk(blocks[r0:r0 + rows], imp, bits, symmetric, method)
        codes[r0:r0 + rows], scales[r0:r0 + rows] = q, round_scales(s, scale_bits)
        if zps is not None:
            zps[r0:r0 + rows] = z
    return BlockQuant(codes=codes, scales=scales, zero_points=zps, bits=bits, block_size=block_size, k=k)


def dequantize_blocks(bq: BlockQuant) -> np.ndarray:
    """BlockQuant -> W [N, K] float32."""
    z = (np.float32(1 << (bq.bits - 1)) if bq.zero_points is None
         else bq.zero_points[..., None].astype(np.float32))
    w = (bq.codes.astype(np.float32) - z) * bq.scales[..., None]
    return w.reshape(w.shape[0], -1)[:, :bq.k]


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 codes along the last axis, low bits first: [..., n] -> [..., n * bits / 8] uint8."""
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    per = 8 // bits
    n = codes.shape[-1]
    if n % per:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (per - n % per,), np.uint8)], axis=-1)
    c = codes.astype(np.uint8).reshape(codes.shape[:-1] + (-1, per))
    out = np.zeros(c.shape[:-1], dtype=np.uint8)
    for j in range(per):
        out |= (c[..., j] & ((1 << bits) - 1)) << (j * bits)
    return out


def unpack_bits(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of pack_bits: [..., m] uint8 -> [..., n] codes."""
    if bits == 8:
        return packed[..., :n].copy()
    per = 8 // bits
    parts = [(packed >> (j * bits)) & ((1 << bits) - 1) for j in range(per)]
    return np.stack(parts, axis=-1).reshape(packed.shape[:-1] + (-1,))[..., :n].astype(np.uint8)


@dataclass(frozen=True)
class MatMulNBitsWeights:
    """Initializers of one com.microsoft MatMulNBits node (and the attributes that go with them)."""

    b: np.ndarray                     # uint8 [N, nb, bs * bits / 8]
    scales: np.ndarray                # float32 [N, nb]
    zero_points: np.ndarray | None    # uint8 [N, ceil(nb * bits / 8)]
    k: int
    n: int
    bits: int
    block_size: int


def to_matmulnbits(bq: BlockQuant) -> MatMulNBitsWeights:
    zp = None if bq.zero_points is None else pack_bits(bq.zero_points, bq.bits)
    return MatMulNBitsWeights(b=pack_bits(bq.codes, bq.bits), scales=bq.scales, zero_points=zp,
                              k=bq.k, n=bq.codes.shape[0], bits=bq.bits, block_size=bq.block_size)


def from_matmulnbits(mw: MatMulNBitsWeights) -> np.ndarray:
    """Dequantize MatMulNBits initializers back to W [N, K]."""
    nb = mw.scales.shape[1]
    codes = unpack_bits(mw.b, mw.bits, mw.block_size)
    zp = None if mw.zero_points is None else unpack_bits(mw.zero_points, mw.bits, nb)
    return dequantize_blocks(BlockQuant(codes, mw.scales, zp, mw.bits, mw.block_size, mw.k))


def quantize_int8_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W [K, N] (MatMul layout) -> (int8 [K, N], scale float32 [N]) symmetric per output column."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.maximum(np.abs(w).max(axis=0) / 127.0, SCALE_EPS).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8_per_channel(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale


def error_stats(w: np.ndarray, w_hat: np.ndarray) -> dict[str, float]:
    """Max abs error and relative RMS error of a reconstruction."""
    d = np.asarray(w_hat, np.float32) - np.asarray(w, np.float32)
    rms = float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))
    return {"max_abs_err": float(np.abs(d).max()) if d.size else 0.0,
            "rel_rms_err": float(np.sqrt(np.mean(np.square(d, dtype=np.float64)))) / max(rms, SCALE_EPS)}
