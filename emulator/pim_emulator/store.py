"""Durable state: SQLite (WAL) on disk plus an in-memory mirror for fast reads.

Every access goes through ``Store.transaction()``, which holds one process-wide lock for
the whole transaction, so concurrent requests never interleave: a write is either fully
applied (SQLite and memory) or, if the block raises, fully undone (SQLite ROLLBACK and
the memory mirror restored from an undo log).

The mirror keeps each document as its JSON text and as one decoded object. ``get``/``list``
hand out fresh objects (``json.loads`` of the text) that callers may mutate freely.
Read-only paths use ``peek``/``iter``/``list(..., copy=False)``, which return the mirror's
own objects without copying: callers must treat them as read-only (shaping builds new dicts
anyway). Every ``put`` stores a fresh decode, so a caller's dict never aliases the mirror.

Secondary indexes: ``find(collection, prop, value)`` answers "which documents have
``prop`` equal to ``value``" (strings compared case-insensitively, as OData ``eq`` does in
the sandbox) without a scan. An index is built on first use from the mirror and then kept in
step by ``put``/``delete``/rollback/``clear``; only string values are indexed.

Nested ``transaction()`` calls on the same thread join the outer transaction (they do
not commit on their own); the outer block decides commit or rollback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Store:
    """SQLite file plus memory mirror; see module docstring."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # collection -> {id: (seq, json_text, decoded)}; dict order == insertion order (seq ascending)
        self._mem: dict[str, dict[str, tuple[int, str, dict]]] = {}
        # collection -> prop -> casefolded string value -> {id: None} (built lazily, see find())
        self._idx: dict[str, dict[str, dict[str, dict[str, None]]]] = {}
        # collection -> number of changes (for caches derived from a collection, see key_union())
        self._version: dict[str, int] = {}
        self._key_cache: dict[str, tuple[int, frozenset]] = {}
        self._meta: dict[str, str] = {}
        self._seq = 0
        for collection, doc_id, seq, doc in self._db.execute("SELECT collection, id, seq, doc FROM docs ORDER BY seq"):
            self._mem.setdefault(collection, {})[doc_id] = (seq, doc, json.loads(doc))
            self._seq = max(self._seq, seq)
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            self._meta[key] = value
        self._closed = False

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        current = getattr(self._local, "tx", None)
        if current is not None:  # nested: join the outer transaction
            yield current
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            tx = Tx(self)
            self._local.tx = tx
            try:
                yield tx
            except BaseException:
                tx._rollback()
                raise
            else:
                tx._commit()
            finally:
                self._local.tx = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()

    # -- indexes (called with the lock held, i.e. from a Tx) -----------------------------------
    def _drop_derived(self) -> None:
        """Forget every index and cache (after ``clear`` or its rollback); rebuilt on use."""
        self._idx = {}
        self._key_cache = {}
        for collection in list(self._version):
            self._version[collection] += 1

    def _changed(self, collection: str, id: str, old: tuple | None, new: tuple | None) -> None:
        """Keep the indexes of ``collection`` in step with one document replacing another."""
        self._version[collection] = self._version.get(collection, 0) + 1
        for prop, index in self._idx.get(collection, {}).items():
            before = _index_key(old[2].get(prop)) if old is not None else None
            after = _index_key(new[2].get(prop)) if new is not None else None
            if before == after:
                continue
            if before is not None:
                ids = index.get(before)
                if ids is not None:
                    ids.pop(id, None)
                    if not ids:
                        del index[before]
            if after is not None:
                index.setdefault(after, {})[id] = None

    def _index(self, collection: str, prop: str) -> dict[str, dict[str, None]]:
        by_prop = self._idx.setdefault(collection, {})
        index = by_prop.get(prop)
        if index is None:
            index = {}
            for doc_id, entry in self._mem.get(collection, {}).items():
                key = _index_key(entry[2].get(prop))
                if key is not None:
                    index.setdefault(key, {})[doc_id] = None
            by_prop[prop] = index
        return index

    # counts for diagnostics (no lock needed for a rough figure)
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(docs) for name, docs in self._mem.items() if docs}


def _index_key(value) -> str | None:
    return value.casefold() if isinstance(value, str) else None


class Tx:
    """One transaction; obtained only from ``Store.transaction()``."""

    def __init__(self, store: Store):
        self._s = store
        self._began = False
        self._undo: list[tuple] = []
        self.wrote = False

    # -- reads ---------------------------------------------------------------
    def get(self, collection: str, id: str) -> dict | None:
        """A fresh copy of one document (the caller may mutate it), or None."""
        entry = self._s._mem.get(collection, {}).get(id)
        return None if entry is None else json.loads(entry[1])

    def peek(self, collection: str, id: str) -> dict | None:
        """The mirror's own object for one document, or None. Read-only: never mutate it."""
        entry = self._s._mem.get(collection, {}).get(id)
        return None if entry is None else entry[2]

    def list(self, collection: str, copy: bool = True) -> list[dict]:
        """Documents in insertion order; ``copy=False`` returns the mirror's objects (read-only)."""
        entries = self._s._mem.get(collection, {}).values()
        if copy:
            return [json.loads(entry[1]) for entry in entries]
        return [entry[2] for entry in entries]

    def iter(self, collection: str) -> Iterator[dict]:
        """The mirror's objects in insertion order, without copying. Read-only: never mutate them,
        and do not write to ``collection`` while iterating."""
        for entry in self._s._mem.get(collection, {}).values():
            yield entry[2]

    def find(self, collection: str, prop: str, value) -> list[str]:
        """Ids (insertion order) of the documents whose top-level ``prop`` is the string ``value``,
        compared case-insensitively (casefold). A non-string ``value`` matches nothing."""
        key = _index_key(value)
        if key is None:
            return []
        ids = self._s._index(collection, prop).get(key)
        if not ids:
            return []
        if len(ids) == 1:
            return list(ids)
        docs = self._s._mem.get(collection, {})
        return sorted(ids, key=lambda i: docs[i][0])

    def find_docs(self, collection: str, prop: str, value) -> list[dict]:
        """``find`` returning the mirror's objects (read-only)."""
        docs = self._s._mem.get(collection, {})
        return [docs[i][2] for i in self.find(collection, prop, value)]

    def order(self, collection: str, ids) -> list[str]:
        """``ids`` that exist in ``collection``, deduplicated, in insertion order."""
        docs = self._s._mem.get(collection, {})
        return sorted({i for i in ids if i in docs}, key=lambda i: docs[i][0])

    def key_union(self, collection: str) -> frozenset:
        """Every top-level key some document of ``collection`` has (cached until it changes)."""
        version = self._s._version.get(collection, 0)
        cached = self._s._key_cache.get(collection)
        if cached is not None and cached[0] == version:
            return cached[1]
        keys = set()
        for entry in self._s._mem.get(collection, {}).values():
            keys.update(entry[2])
        result = frozenset(keys)
        self._s._key_cache[collection] = (version, result)
        return result

    def ids(self, collection: str) -> list[str]:
        """Ids of a collection in insertion order (cheap; no documents decoded)."""
        return list(self._s._mem.get(collection, {}))

    def count(self, collection: str) -> int:
        return len(self._s._mem.get(collection, {}))

    def meta_get(self, key: str, default=None):
        text = self._s._meta.get(key)
        return default if text is None else json.loads(text)

    # -- writes --------------------------------------------------------------
    def _begin(self) -> None:
        if not self._began:
            self._s._db.execute("BEGIN IMMEDIATE")
            self._began = True
            self.wrote = True

    def put(self, collection: str, id: str, doc: dict) -> None:
        if not isinstance(id, str) or not id:
            raise ValueError("document id must be a non-empty string")
        text = _dumps(doc)
        self._begin()
        docs = self._s._mem.setdefault(collection, {})
        old = docs.get(id)
        if old is None:
            self._s._seq += 1
            seq = self._s._seq
        else:
            seq = old[0]
        self._s._db.execute(
            "INSERT INTO docs (collection, id, seq, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(collection, id) DO UPDATE SET doc = excluded.doc",
            (collection, id, seq, text),
        )
        self._undo.append(("doc", collection, id, old))
        new = (seq, text, json.loads(text))
        docs[id] = new
        self._s._changed(collection, id, old, new)

    def delete(self, collection: str, id: str) -> bool:
        docs = self._s._mem.get(collection)
        if not docs or id not in docs:
            return False
        self._begin()
        self._s._db.execute("DELETE FROM docs WHERE collection = ? AND id = ?", (collection, id))
        old = docs.pop(id)
        self._undo.append(("doc", collection, id, old))
        self._s._changed(collection, id, old, None)
        return True

    def meta_put(self, key: str, value) -> None:
        text = _dumps(value)
        self._begin()
        self._s._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, text),
        )
        self._undo.append(("meta", None, key, self._s._meta.get(key)))
        self._s._meta[key] = text

    def meta_delete(self, key: str) -> bool:
        if key not in self._s._meta:
            return False
        self._begin()
        self._s._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        self._undo.append(("meta", None, key, self._s._meta.pop(key)))
        return True

    def clear(self) -> None:
        self._begin()
        self._s._db.execute("DELETE FROM docs")
        self._s._db.execute("DELETE FROM meta")
        self._undo.append(("all", self._s._mem, self._s._meta, self._s._seq))
        self._s._mem = {}
        self._s._meta = {}
        self._s._drop_derived()

    # -- end -----------------------------------------------------------------
    def _commit(self) -> None:
        if self._began:
            self._s._db.execute("COMMIT")
        self._undo.clear()

    def _rollback(self) -> None:
        if self._began:
            try:
                self._s._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        resort = set()
        for kind, a, b, old in reversed(self._undo):
            if kind == "all":
                self._s._mem, self._s._meta, self._s._seq = a, b, old
                self._s._drop_derived()
            elif kind == "meta":
                if old is None:
                    self._s._meta.pop(b, None)
                else:
                    self._s._meta[b] = old
            else:
                docs = self._s._mem.setdefault(a, {})
                current = docs.get(b)
                if old is None:
                    docs.pop(b, None)
                else:
                    if b not in docs:
                        resort.add(a)
                    docs[b] = old
                self._s._changed(a, b, current, old)
        for collection in resort:  # a deleted document came back: restore insertion order
            docs = self._s._mem[collection]
            self._s._mem[collection] = dict(sorted(docs.items(), key=lambda kv: kv[1][0]))
        self._undo.clear()
