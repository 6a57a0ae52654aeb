"""The prompt cache: a chat's fixed opening, prefilled once and its KV rows reused by every conversation.

HyperCLOVAX's conversations all begin with the same blocks (tool_list, then system with the card's default
prompt and today's date; conversation.py), so their KV rows are the same for every chat. `PromptCache.fill`
puts the rows of such an opening into a fresh cache: copied from memory (per Engine, least recently used
first out, bounded by entries and bytes), else read from disk (optional: a folder, e.g. <model>/.prompt-cache,
files in session_file.py's checked format), else prefilled — as one session run of exactly those ids — and
kept. A first turn then prefills only its own message.

The key is the exact ids and what the rows depend on: the variant's checksums, KV dtype and layout
(session_file.model_key), and on disk also onnxruntime's version, the thread count and the CPU
architecture, so a warm answer is the same bytes as a cold one. A disk file that is damaged, of another
model or of other ids is ignored (and rewritten); a folder that cannot be written is only not used.
Prefilling the rest of a prompt on top of copied rows gives the same logits as one run over the whole
prompt (tests/test_prompt_cache.py holds that).
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import SessionError
from .session_file import cache_rows, check_rows, model_key, open_kv_file, write_kv_file

DISK_FOLDER = ".prompt-cache"   # the CLI's place for the files, inside the model folder
KIND = "prompt-cache"


class PromptCache:
    """Opening rows of one model (an Engine's OnnxModel). enabled=False: fill() does nothing."""

    def __init__(self, model: Any, *, enabled: bool = True, folder: str | Path | None = None,
                 max_entries: int = 8, max_bytes: int = 64 << 20, max_files: int = 8):
        self.model, self.enabled = model, enabled
        self.folder = Path(folder) if folder is not None else None
        self.max_entries, self.max_bytes, self.max_files = max_entries, max_bytes, max_files
        self._rows: OrderedDict[str, list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.disk_hits = self.misses = 0   # what fill() did, for tests and benchmarks

    @functools.cached_property
    def _model(self) -> dict[str, Any]:
        return model_key(self.model)

    @functools.cached_property
    def _runtime(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "threads": self.model.threads, "machine": platform.machine()}

    def key(self, ids: Sequence[int]) -> str:
        blob = json.dumps([self._model, self._runtime, [int(i) for i in ids]], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def fill(self, cache: Any, ids: Sequence[int]) -> bool:
        """Put the rows of `ids` into the empty `cache` (from memory, disk, or a prefill that is then kept).
        Returns False (and does nothing) when the cache is off or `ids` is empty."""
        if not self.enabled or not ids:
            return False
        assert cache.length == 0 and len(ids) <= cache.capacity, (cache.length, len(ids), cache.capacity)
        key = self.key(ids)
        with self._lock:
            rows = self._rows.get(key)
            if rows is not None:
                self._rows.move_to_end(key)
                self.hits += 1
        if rows is None and self.folder is not None:
            rows = self._read(key, ids)
            if rows is not None:
                self.disk_hits += 1
                self._keep(key, rows)
        if rows is None:
            self.misses += 1
            self.model.prefill(cache, np.asarray(ids, np.int64))
            rows = [np.array(a) for a in cache_rows(cache)]     # copies: the cache's own rows move on
            self._keep(key, rows)
            if self.folder is not None:
                self._write(key, ids, rows)
            return True
        for dst, src in zip(cache.arrays, rows):
            dst[:, :, :len(ids)] = src
        cache.length = len(ids)
        return True

    def clear(self) -> None:
        """Forget the rows kept in memory (files on disk stay)."""
        with self._lock:
            self._rows.clear()

    def _keep(self, key: str, rows: list[np.ndarray]) -> None:
        with self._lock:
            self._rows[key] = rows
            self._rows.move_to_end(key)
            while len(self._rows) > self.max_entries or (
                    len(self._rows) > 1 and _nbytes(self._rows) > self.max_bytes):
                self._rows.popitem(last=False)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key[:40]}.kv"

    def _read(self, key: str, ids: Sequence[int]) -> list[np.ndarray] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with open_kv_file(path, KIND) as (header, arrays):
                if header.get("runtime") != self._runtime or header.get("ids") != [int(i) for i in ids]:
                    return None
                if check_rows(header, arrays, self._model, path) != len(ids):
                    return None
                return [np.array(a) for a in arrays]
        except SessionError:      # damaged or of another model: ignored, and rewritten after the prefill
            return None

    def _write(self, key: str, ids: Sequence[int], rows: list[np.ndarray]) -> None:
        meta = {"model": self._model, "runtime": self._runtime, "length": len(ids),
                "ids": [int(i) for i in ids]}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_kv_file(self._path(key), KIND, meta, rows)
            files = sorted(self.folder.glob("*.kv"), key=lambda p: p.stat().st_mtime)
            for old in files[:max(0, len(files) - self.max_files)]:
                old.unlink(missing_ok=True)
        except (OSError, SessionError):   # a read-only model folder: the cache stays in memory only
            pass


def _nbytes(entries: OrderedDict[str, list[np.ndarray]]) -> int:
    return sum(a.nbytes for rows in entries.values() for a in rows)
