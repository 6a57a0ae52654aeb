"""One exported graph in an onnxruntime session, and the KV cache it writes in place.

What it does: creates the session (threads, optimised-graph cache), owns the preallocated KV buffers and runs
one step of the graph — a prefill of S tokens or a decode of one — returning logits. What it does not:
tokenize, sample or decide when to stop (generate.py does).

The KV cache is one OrtValue per layer for keys and one for values, shape (batch=1, num_key_value_heads,
capacity, head_dim), bound through IOBinding as both the past input and the present output of
GroupQueryAttention, so onnxruntime writes the new rows in place (rows past `length` are never read). The
buffers are allocated once for what a request needs and only grow (geometrically, copying the rows in use)
when a chat outgrows them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import manifest as mf
from .errors import ManifestError, PromptError
from .manifest import Manifest, Variant

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}  # int8: quantized cache
_ORT_KV = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8"}
FROM_GRAPH = "from-graph"   # Variant.kv_dtype of OnnxModel.from_graph: read the dtype from the graph's inputs
_GROW_STEP = 256  # capacity is rounded up to this many positions
PREFILL_CHUNK = 512  # prompt tokens per session run (bounds attention's score buffers; see prefill)


@dataclass
class KVCache:
    """The caller-owned state of one sequence: per-layer K and V buffers, how many positions hold tokens, and
    the small fixed decode inputs/logits buffer. Each generation owns its cache, so one OnnxModel can serve
    several threads at once (onnxruntime allows concurrent runs of one session)."""

    arrays: list[np.ndarray]     # 2 per layer, K then V: (1, num_key_value_heads, capacity, head_dim)
    capacity: int
    vocab_size: int
    length: int = 0
    io: ort.IOBinding | None = field(default=None, repr=False)  # decode binding, built on first decode
    ortvalues: list[ort.OrtValue] = field(default_factory=list, repr=False)
    # Decode inputs live in fixed numpy arrays wrapped (not copied) by OrtValues: a decode step only writes
    # three integers, then runs. Logits land in a preallocated buffer the caller reads without a copy.
    ids: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.int64), repr=False)
    seqlens_k: np.ndarray = field(default_factory=lambda: np.zeros((1,), np.int32), repr=False)
    total: np.ndarray = field(default_factory=lambda: np.zeros((), np.int32), repr=False)
    last: np.ndarray = field(default_factory=lambda: np.zeros((1,), np.int64), repr=False)
    logits: np.ndarray = field(default=None, repr=False)  # (1, 1, vocab_size)

    def __post_init__(self) -> None:
        # OrtValues wrap the numpy memory without a copy: onnxruntime reads and writes it in place.
        self.ortvalues = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]
        self.logits = np.zeros((1, 1, self.vocab_size), np.float32)


@dataclass
class SharedKV:
    """The KV buffers of `slots` sequences side by side on the batch axis, (slots, kv_heads, capacity,
    head_dim) per layer, for batched decode (batch.py). `slot(b)` is sequence b's own KVCache: a view of row b
    (the leading axis, so contiguous), through which its prompt is prefilled alone."""

    arrays: list[np.ndarray]
    capacity: int
    vocab_size: int
    caches: list[KVCache] = field(default_factory=list, repr=False)
    # one binding per batch size n (rows 0..n-1), built on first use; inputs/logits are views of these
    ids: np.ndarray = field(default=None, repr=False)
    seqlens_k: np.ndarray = field(default=None, repr=False)
    logits: np.ndarray = field(default=None, repr=False)
    bindings: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.arrays[0].shape[0]
        self.caches = [KVCache([a[b:b + 1] for a in self.arrays], self.capacity, self.vocab_size)
                       for b in range(n)]
        self.ids = np.zeros((n, 1), np.int64)
        self.seqlens_k = np.zeros((n,), np.int32)
        self.logits = np.zeros((n, 1, self.vocab_size), np.float32)

    @property
    def slots(self) -> int:
        return len(self.caches)


def _session_options(threads: int, cache_path: Path | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # EXTENDED, not ALL: ALL may bake hardware-specific layouts into a saved graph.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return so


class OnnxModel:
    """The session of one variant plus the fixed, preallocated decode inputs and logits buffer."""

    def __init__(self, manifest: Manifest, variant: Variant, *, threads: int | None = None):
        self.manifest = manifest
        self.variant = variant
        self.config = manifest.config
        self.kv_dtype = _NP_DTYPES.get(variant.kv_dtype)
        if self.kv_dtype is None and variant.kv_dtype != FROM_GRAPH:
            raise ManifestError(f"{manifest.folder}/manifest.json: variants.{variant.name}.kv_dtype "
                                f"{variant.kv_dtype!r} is not supported (float32, float16, int8)")
        path = manifest.folder / variant.file
        for name in (variant.file, *variant.data_files):
            if not (manifest.folder / name).is_file():
                raise ManifestError(f"{manifest.folder / name}: missing (variant {variant.name}); "
                                    "re-export the model")
        self.threads = threads or default_threads()
        try:
            self.session = ort.InferenceSession(str(path), _session_options(self.threads, None),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types; name the file and what to do
            raise ManifestError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {str(e)[:300]}); "
                                "the file is corrupted or truncated - re-export the model") from None
        self._check_io()
        if self.kv_dtype is None:
            past = next(i for i in self.session.get_inputs() if i.name == mf.PAST_KEY.format(i=0))
            self.kv_dtype = _NP_DTYPES[_ORT_KV.get(past.type, "float32")]
        n = self.config.num_hidden_layers
        self._past = mf.past_names(n)
        self._present = mf.present_names(n)

    @classmethod
    def from_graph(cls, manifest: Manifest, path: Path, *, threads: int | None = None) -> "OnnxModel":
        """A graph of this model that is not a manifest variant (yet): a quantized candidate being evaluated,
        a float-KV copy for a cross-platform check. Its KV cache dtype is read from the graph."""
        path = Path(path).resolve()
        variant = Variant(name=path.name, file=str(path), data_files=(), kv_dtype=FROM_GRAPH, quantization={},
                          size_bytes=0)
        return cls(manifest, variant, threads=threads)

    def window_feeds(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Plain session feeds (no binding) that run `ids` as one fresh prompt into a KV buffer of exactly
        len(ids) slots, with logits for every position: for evaluation and calibration runs, which read other
        outputs too (session.run(names, feeds))."""
        c, s = self.config, len(ids)
        kv = np.zeros((1, c.num_key_value_heads, s, c.head_dim), self.kv_dtype)
        feeds = {mf.INPUT_IDS: np.asarray(ids, np.int64)[None], mf.SEQLENS_K: np.array([s - 1], np.int32),
                 mf.TOTAL_SEQ_LEN: np.array(s, np.int32), mf.LOGITS_INDEX: np.arange(s, dtype=np.int64)}
        for k, v in self._past:
            feeds[k], feeds[v] = kv, kv
        return feeds

    def _check_io(self) -> None:
        have = {i.name for i in self.session.get_inputs()} | {o.name for o in self.session.get_outputs()}
        n = self.config.num_hidden_layers
        need = {mf.INPUT_IDS, mf.SEQLENS_K, mf.TOTAL_SEQ_LEN, mf.LOGITS_INDEX, mf.LOGITS}
        need |= {name for pair in mf.past_names(n) + mf.present_names(n) for name in pair}
        missing = sorted(need - have)
        if missing:
            raise ManifestError(f"{self.manifest.folder / self.variant.file}: graph lacks {missing[:4]} "
                                "(not a clova-edge export of this manifest); re-export the model")

    # -- cache -----------------------------------------------------------------------------------------------
    def new_cache(self, capacity: int) -> KVCache:
        """A zeroed cache for `capacity` positions (rounded up, at most the context length)."""
        capacity = self._round_capacity(capacity)
        c = self.config
        shape = (1, c.num_key_value_heads, capacity, c.head_dim)
        return KVCache([np.zeros(shape, self.kv_dtype) for _ in range(2 * c.num_hidden_layers)], capacity,
                       c.vocab_size)

    def new_shared_cache(self, slots: int, capacity: int) -> SharedKV:
        """Zeroed buffers for `slots` sequences of `capacity` positions each (rounded up, at most the
        context). np.zeros pages are committed only when written, so unused capacity costs no RSS."""
        capacity = self._round_capacity(capacity)
        c = self.config
        shape = (slots, c.num_key_value_heads, capacity, c.head_dim)
        return SharedKV([np.zeros(shape, self.kv_dtype) for _ in range(2 * c.num_hidden_layers)], capacity,
                        c.vocab_size)

    def _round_capacity(self, n: int) -> int:
        ctx = self.config.context_length
        return min(ctx, max(_GROW_STEP, -(-n // _GROW_STEP) * _GROW_STEP))

    def ensure_capacity(self, cache: KVCache, needed: int) -> KVCache:
        """Return `cache` if it holds `needed` positions, else a larger one (x1.5 at least) with the rows
        copied."""
        if needed <= cache.capacity:
            return cache
        if needed > self.config.context_length:
            raise PromptError(f"{needed} tokens do not fit the context of {self.config.context_length}")
        bigger = self.new_cache(max(needed, cache.capacity * 3 // 2))
        for src, dst in zip(cache.arrays, bigger.arrays):
            dst[:, :, :cache.length] = src[:, :, :cache.length]
        bigger.length = cache.length
        return bigger

    # -- steps -----------------------------------------------------------------------------------------------
    def _bind_cache(self, io: ort.IOBinding, cache: KVCache) -> None:
        kv = cache.ortvalues
        for (pk, pv), (ok, ovn), k, v in zip(self._past, self._present, kv[0::2], kv[1::2]):
            io.bind_ortvalue_input(pk, k)
            io.bind_ortvalue_input(pv, v)
            io.bind_ortvalue_output(ok, k)   # the same buffer: GroupQueryAttention writes new rows in place
            io.bind_ortvalue_output(ovn, v)

    def prefill(self, cache: KVCache, ids: np.ndarray, *, all_logits: bool = False) -> np.ndarray:
        """Run S new tokens on top of the cache. Returns logits (S, V) if all_logits else (V,) of the last
        token.

        Long prompts run in chunks of PREFILL_CHUNK tokens: attention materialises heads x chunk x context
        scores, so one 3.5K-token run would need ~0.8 GB for them alone; chunks bound that and change no
        result.
        """
        s = int(ids.shape[0])
        assert cache.length + s <= cache.capacity, (cache.length + s, cache.capacity)
        outs = []
        for i in range(0, s, PREFILL_CHUNK):
            chunk = ids[i:i + PREFILL_CHUNK]
            # all rows' logits only when asked (perplexity); mid-prompt chunks compute one row, then drop it
            rows = (np.arange(len(chunk), dtype=np.int64) if all_logits
                    else np.array([len(chunk) - 1], np.int64))
            outs.append(self.run_chunk(cache, chunk, rows))
        return np.concatenate(outs, axis=0) if all_logits else outs[-1][-1]

    def run_chunk(self, cache: KVCache, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One session run of len(ids) tokens; returns the logits of `rows` (L, V)."""
        s = int(ids.shape[0])
        total = cache.length + s
        io = self.session.io_binding()
        io.bind_cpu_input(mf.INPUT_IDS, np.ascontiguousarray(ids, np.int64).reshape(1, s))
        io.bind_cpu_input(mf.SEQLENS_K, np.array([total - 1], np.int32))
        io.bind_cpu_input(mf.TOTAL_SEQ_LEN, np.array(total, np.int32))
        io.bind_cpu_input(mf.LOGITS_INDEX, rows)
        io.bind_output(mf.LOGITS, "cpu")   # bound first: get_outputs() lists outputs in binding order
        self._bind_cache(io, cache)
        self.session.run_with_iobinding(io)
        cache.length = total
        return io.get_outputs()[0].numpy()[0]

    def decode(self, cache: KVCache, token: int) -> np.ndarray:
        """Run one token. Returns a view of the preallocated logits buffer (V,), valid until the next step."""
        assert cache.length < cache.capacity, (cache.length, cache.capacity)
        if cache.io is None:
            cache.io = io = self.session.io_binding()
            for name, array in ((mf.INPUT_IDS, cache.ids), (mf.SEQLENS_K, cache.seqlens_k),
                                (mf.TOTAL_SEQ_LEN, cache.total), (mf.LOGITS_INDEX, cache.last)):
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
            self._bind_cache(io, cache)
            io.bind_ortvalue_output(mf.LOGITS, ort.OrtValue.ortvalue_from_numpy(cache.logits))
        cache.ids[0, 0] = token
        cache.seqlens_k[0] = cache.length          # tokens in the cache after this step, minus one
        cache.total[()] = cache.length + 1
        self.session.run_with_iobinding(cache.io)
        cache.length += 1
        return cache.logits[0, 0]


    def decode_batch(self, kv: SharedKV, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """One session run of one token for each of rows 0..n-1 of `kv` (n = len(tokens)): row b's token is
        written at position positions[b] and attends to the rows before it (GroupQueryAttention's per-row
        seqlens_k). Lengths are the caller's to keep. Returns logits (n, V): a view of a buffer that the next
        call overwrites."""
        n = len(tokens)
        assert 0 < n <= kv.slots and int(positions.max()) < kv.capacity, (n, positions, kv.capacity)
        entry = kv.bindings.get(n)
        if entry is None:
            # the OrtValues wrap numpy memory: every array bound here is kept alive in the entry
            io, total, row = self.session.io_binding(), np.zeros((), np.int32), np.zeros((1,), np.int64)
            for name, array in ((mf.INPUT_IDS, kv.ids[:n]), (mf.SEQLENS_K, kv.seqlens_k[:n]),
                                (mf.TOTAL_SEQ_LEN, total), (mf.LOGITS_INDEX, row)):
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
            views = [ort.OrtValue.ortvalue_from_numpy(a[:n]) for a in kv.arrays]
            for (pk, pv), (ok, ovn), k, v in zip(self._past, self._present, views[0::2], views[1::2]):
                io.bind_ortvalue_input(pk, k)
                io.bind_ortvalue_input(pv, v)
                io.bind_ortvalue_output(ok, k)   # in place, as in decode
                io.bind_ortvalue_output(ovn, v)
            io.bind_ortvalue_output(mf.LOGITS, ort.OrtValue.ortvalue_from_numpy(kv.logits[:n]))
            kv.bindings[n] = entry = (io, total, views, row)
        io, total = entry[0], entry[1]
        kv.ids[:n, 0] = tokens
        kv.seqlens_k[:n] = positions          # row b holds positions[b] + 1 tokens after this step, minus one
        total[()] = int(positions.max()) + 1
        self.session.run_with_iobinding(io)
        return kv.logits[:n, 0]


def default_threads() -> int:
    """Physical-ish core count: onnxruntime's matmuls gain nothing from SMT siblings. CLOVA_EDGE_THREADS
    overrides."""
    env = os.environ.get("CLOVA_EDGE_THREADS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
