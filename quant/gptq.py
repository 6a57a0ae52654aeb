"""GPTQ: blockwise 4-bit codes chosen column by column, each column's rounding error pushed onto the columns
not yet quantized, weighted by the layer's input statistics (Frantar et al., 2022, "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers"; written here from the paper's
algorithm in numpy).

Why: blocks of 128 weights make onnxruntime's MatMulNBits much faster than blocks of 32 (quant/apply.py),
but a scale shared by 128 weights rounds them more coarsely. GPTQ recovers much of that: it minimises the
layer's output error ||X W^T - X Q^T||^2 over the calibration activations X instead of each weight's own
error.

The per-block scale (and zero point) is chosen when the quantizer reaches the block's first column, from
the block's weights as updated by the error feedback so far, with the activation-weighted scale search of
primitives.py (importance = diag(H)). Columns are processed in natural order (no activation reordering: a
permutation would scatter each block's columns, and MatMulNBits blocks must be contiguous).
"""

from __future__ import annotations

import numpy as np

from . import primitives as P

DAMP = 0.01   # fraction of the mean diagonal added to H: keeps the inverse stable for rarely active channels


def hessian_inverse_cholesky(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """Upper-triangular U with U^T U = (H + damp * mean(diag H) * I)^-1 (float64). Dead channels (zero
    diagonal) get a unit diagonal: their weights meet no activation, so any code is exact for the output."""
    h = np.array(h, dtype=np.float64)
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    inv = np.linalg.inv(h)
    inv = (inv + inv.T) * 0.5                    # symmetric up to rounding; Cholesky wants it exactly
    return np.linalg.cholesky(inv).T


def quantize_blocks_gptq(w: np.ndarray, h: np.ndarray, bits: int = 4, block_size: int = 128, *,
                         symmetric: bool = True, damp: float = DAMP, scale_bits: int = 32) -> P.BlockQuant:
    """Quantize W [N, K] blockwise along K with GPTQ, given H [K, K] = sum over tokens of x x^T of its
    input. scale_bits 16: every scale is rounded to float16 before its block's codes are chosen, so the
    error feedback sees the scale that will be stored."""
    P._check(bits, block_size)
    n, k = w.shape
    if h.shape != (k, k):
        raise ValueError(f"H must be [{k}, {k}] for a weight of shape {w.shape}, got {h.shape}")
    nb = -(-k // block_size)
    kp = nb * block_size
    wp = np.zeros((n, kp), np.float64)
    wp[:, :k] = w
    hp = np.zeros((kp, kp), np.float64)
    hp[:k, :k] = h                                   # padded columns are dead: zero weights, unit diagonal
    wp[:, np.diag(hp) <= 0] = 0.0
    u = hessian_inverse_cholesky(hp, damp)
    imp = np.maximum(np.diag(hp), 0.0)
    qmax, qn = (1 << bits) - 1, 1 << (bits - 1)
    codes = np.empty((n, nb, block_size), np.uint8)
    scales = np.empty((n, nb), np.float32)
    zps = None if symmetric else np.empty((n, nb), np.uint8)
    for b in range(nb):
        c0, c1 = b * block_size, (b + 1) * block_size
        blk_imp = imp[c0:c1] / max(float(imp[c0:c1].mean()), P.SCALE_EPS) + 1e-3
        _, s, z = P._quantize_chunk(wp[:, None, c0:c1].astype(np.float32),
                                    blk_imp[None, None, :].astype(np.float32),
                                    bits, symmetric, "search")
        s = P.round_scales(s[:, 0], scale_bits).astype(np.float64)
        zf = np.full(n, float(qn)) if z is None else z[:, 0].astype(np.float64)
        scales[:, b] = s
        if zps is not None:
            zps[:, b] = zf.astype(np.uint8)
        err = np.empty((n, block_size), np.float64)
        for j in range(block_size):
            c = c0 + j
            q = np.clip(np.rint(wp[:, c] / s) + zf, 0, qmax)
            codes[:, b, j] = q.astype(np.uint8)
            e = (wp[:, c] - (q - zf) * s) / u[c, c]
            wp[:, c + 1:c1] -= np.outer(e, u[c, c + 1:c1])   # feedback inside the block, column by column
            err[:, j] = e
        wp[:, c1:] -= err @ u[c0:c1, c1:]                       # then onto every later block at once
    return P.BlockQuant(codes=codes, scales=scales, zero_points=zps, bits=bits, block_size=block_size, k=k)
