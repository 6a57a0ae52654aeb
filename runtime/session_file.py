"""Files of KV rows — saved chat sessions and the prompt cache's disk entries — in one checked format.

Layout: MAGIC (8 bytes) | sha256 of everything after it (32) | header length (uint32 LE) | header JSON |
payload. The header names the kind ("session" or "prompt-cache"), the format version, the model that wrote
the rows (`model_key`: variant, KV dtype and shape, the manifest's checksums of the graph and tokenizer
files) and each array's dtype and shape; the payload is the arrays' raw bytes, C order, one after another.
Reading checks all of that before a row is used: a damaged or truncated file, an unknown version, or rows of
another model, variant or KV layout is one SessionError naming the file and what differs — never rows that
would give a wrong answer. Writes are atomic (a temporary file in the same folder, then renamed over).

What a session holds: the messages, the ids whose rows are in the cache, the settings, tools and whether
calls are constrained; loading gives a ChatSession that continues exactly where the saved one was. Not here:
when the prompt cache reads or writes its files (prompt_cache.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import SessionError
from .settings import GenerationSettings
from .tools import ToolCall

MAGIC = b"CLVEDGKV"
VERSION = 1
_DIGEST = 32
_PREFIX = len(MAGIC) + _DIGEST + 4


def model_key(model: Any) -> dict[str, Any]:
    """What KV rows depend on, as recorded by the manifest: the variant, its KV dtype and shape, and the
    checksums of its graph files and the tokenizer (a re-export or re-quantization changes them)."""
    m, v, c = model.manifest, model.variant, model.config
    files = m.raw.get("files") or {}
    names = [v.file, *v.data_files, m.tokenizer_file, m.tokenizer_config_file]
    sums = {n: (files.get(n) or {}).get("sha256") or f"bytes={(files.get(n) or {}).get('bytes')}"
            for n in names}
    return {"variant": v.name, "kv_dtype": np.dtype(model.kv_dtype).name,
            "num_hidden_layers": c.num_hidden_layers, "num_key_value_heads": c.num_key_value_heads,
            "head_dim": c.head_dim, "context_length": c.context_length, "checksums": sums}


def write_kv_file(path: str | Path, kind: str, meta: dict[str, Any], arrays: Sequence[np.ndarray]) -> None:
    """Write `meta` (JSON-able) and `arrays` to `path` atomically."""
    path = Path(path)
    header = {"format": "clova-edge-kv", "version": VERSION, "kind": kind, **meta,
              "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]}
    head = json.dumps(header, ensure_ascii=False).encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise SessionError(f"{path}: cannot write there ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            digest = hashlib.sha256()
            f.write(MAGIC + bytes(_DIGEST))
            for chunk in (struct.pack("<I", len(head)), head):
                digest.update(chunk)
                f.write(chunk)
            for a in arrays:
                data = memoryview(np.ascontiguousarray(a)).cast("B")
                digest.update(data)
                f.write(data)
            f.seek(len(MAGIC))
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)              # mkstemp makes 0600 files
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SessionError(f"{path}: cannot write it ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def open_kv_file(path: str | Path, kind: str) -> Iterator[tuple[dict[str, Any], list[np.ndarray]]]:
    """(header, arrays) of a checked file; the arrays are read-only views of the memory-mapped file, valid
    inside the `with` only (copy what you keep)."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise SessionError(f"{path}: cannot read it ({e.strerror})") from None
    with f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):     # ValueError: an empty file
            raise SessionError(f"{path}: empty or unreadable; not a clova-edge {kind} file") from None
        views: list[np.ndarray] = []
        try:
            header = _check(buf, path, kind)
            offset = _PREFIX + struct.unpack_from("<I", buf, len(MAGIC) + _DIGEST)[0]
            for spec in header["arrays"]:
                dtype, shape = np.dtype(spec["dtype"]), tuple(int(n) for n in spec["shape"])
                views.append(np.frombuffer(buf, dtype, int(np.prod(shape)), offset).reshape(shape))
                offset += views[-1].nbytes
            if offset != len(buf):
                raise SessionError(f"{path}: {len(buf) - offset} bytes more than its header describes; "
                                   "the file is damaged")
            yield header, views
        finally:
            views.clear()                 # no view may outlive the mapping
            with contextlib.suppress(BufferError):
                buf.close()


def _check(buf: mmap.mmap, path: Path, kind: str) -> dict[str, Any]:
    if len(buf) < _PREFIX or buf[:len(MAGIC)] != MAGIC:
        raise SessionError(f"{path}: not a clova-edge {kind} file")
    stored = buf[len(MAGIC):len(MAGIC) + _DIGEST]
    if hashlib.sha256(memoryview(buf)[len(MAGIC) + _DIGEST:]).digest() != stored:
        raise SessionError(f"{path}: checksum mismatch (the file is damaged or truncated)")
    n = struct.unpack_from("<I", buf, len(MAGIC) + _DIGEST)[0]
    try:
        header = json.loads(bytes(buf[_PREFIX:_PREFIX + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SessionError(f"{path}: its header is not valid JSON (damaged)") from None
    version = header.get("version") if isinstance(header, dict) else None
    if version != VERSION:
        raise SessionError(f"{path}: format version {version} is not supported (this clova-edge reads "
                           f"version {VERSION})")
    if header.get("kind") != kind:
        raise SessionError(f"{path}: a {header.get('kind')} file, not a {kind} file")
    return header


def check_model(header: dict[str, Any], key: dict[str, Any], path: Path) -> None:
    """The file's rows were written by the model `key` describes (model_key), or a SessionError saying what
    differs."""
    theirs = header.get("model") or {}
    for field in key:
        if theirs.get(field) != key[field]:
            if field == "checksums":
                what = ", ".join(n for n in key[field] if (theirs.get(field) or {}).get(n) != key[field][n])
                raise SessionError(f"{path}: written by another export of the model ({what} differ); "
                                   "load it with the model folder that saved it")
            raise SessionError(f"{path}: written for {field} {theirs.get(field)!r}, this model has "
                               f"{key[field]!r}; load it with the model and variant that saved it")


def check_rows(header: dict[str, Any], arrays: list[np.ndarray], key: dict[str, Any], path: Path) -> int:
    """The number of rows, after checking the model (check_model) and that the arrays have its KV layout:
    2 per layer, (1, num_key_value_heads, rows, head_dim) of the KV dtype."""
    check_model(header, key, path)
    rows = header.get("length")
    if not isinstance(rows, int) or not 0 <= rows < key["context_length"]:
        raise SessionError(f"{path}: {rows!r} cached positions do not fit the context")
    shape = (1, key["num_key_value_heads"], rows, key["head_dim"])
    if len(arrays) != 2 * key["num_hidden_layers"] or any(
            a.shape != shape or a.dtype != np.dtype(key["kv_dtype"]) for a in arrays):
        raise SessionError(f"{path}: its KV arrays do not have this model's layout "
                           f"({2 * key['num_hidden_layers']} x {shape} {key['kv_dtype']})")
    return rows


def cache_rows(cache: Any) -> list[np.ndarray]:
    """Views of the rows in use of a KVCache, layer by layer (K, V)."""
    return [a[:, :, :cache.length] for a in cache.arrays]


def save_session(session: Any, path: str | Path) -> None:
    """Write a ChatSession: its conversation, settings and KV rows (see the module docstring)."""
    cache, ids = session.cache, list(session.cache_ids)
    n = cache.length if cache is not None else 0
    assert len(ids) == n, (len(ids), n)
    meta = {"model": model_key(session.engine.model), "length": n,
            "session": {"messages": session.messages, "cache_ids": ids, "tools": list(session.tools),
                        "constrain_tools": session.constrain_tools, "settings": asdict(session.settings)}}
    write_kv_file(path, "session", meta, cache_rows(cache) if n else [])


def load_session(engine: Any, path: str | Path, session_class: Any) -> Any:
    """A ChatSession (`session_class`: chat.py imports this module) that continues the one saved at `path`
    (by save_session) on `engine`."""
    path = Path(path)
    key = model_key(engine.model)
    with open_kv_file(path, "session") as (header, arrays):
        check_model(header, key, path)
        n = 0 if header.get("length") == 0 and not arrays else check_rows(header, arrays, key, path)
        try:
            saved = header["session"]
            ids = [int(i) for i in saved["cache_ids"]]
            settings = GenerationSettings(**{k: tuple(v) if k == "stop" else v
                                             for k, v in saved["settings"].items()})
            session = session_class(engine, system=None, tools=saved["tools"], settings=settings,
                                  constrain_tools=bool(saved["constrain_tools"]), warm=False)
            messages = [dict(m) for m in saved["messages"]]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SessionError(f"{path}: the saved session is malformed ({type(e).__name__}: {e})") from None
        if len(ids) != n:
            raise SessionError(f"{path}: {len(ids)} ids for {n} cached positions (damaged)")
        session.messages = messages
        if n:
            session.cache = engine.prepare_cache(None, keep=0, room=n + settings.max_new_tokens)
            for dst, src in zip(session.cache.arrays, arrays):
                dst[:, :, :n] = src
            session.cache.length = n
        session.cache_ids = ids
    last = messages[-1] if messages else {}
    if last.get("role") == "assistant" and last.get("tool_calls") and not last.get("final", True):
        session.pending_calls = tuple(ToolCall(c["name"], dict(c.get("arguments") or {}))
                                      for c in last["tool_calls"])
    return session
