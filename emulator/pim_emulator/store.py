"""Durable state: SQLite (WAL) on disk plus an in-memory mirror for fast reads.

Every access goes through ``Store.transaction()``, which holds one process-wide lock for
the whole transaction, so concurrent requests never interleave: a write is either fully
applied (SQLite and memory) or, if the block raises, fully undone (SQLite ROLLBACK and
the memory mirror restored from an undo log).

The mirror keeps each document as its JSON text, so ``get``/``list`` hand out fresh
objects (``json.loads``) that callers may mutate freely, and the mirror itself can never
be changed behind the store's back.

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
        # collection -> {id: (seq, json_text)}; dict order == insertion order (seq ascending)
        self._mem: dict[str, dict[str, tuple[int, str]]] = {}
        self._meta: dict[str, str] = {}
        self._seq = 0
        for collection, doc_id, seq, doc in self._db.execute("SELECT collection, id, seq, doc FROM docs ORDER BY seq"):
            self._mem.setdefault(collection, {})[doc_id] = (seq, doc)
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

    # counts for diagnostics (no lock needed for a rough figure)
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(docs) for name, docs in self._mem.items() if docs}


class Tx:
    """One transaction; obtained only from ``Store.transaction()``."""

    def __init__(self, store: Store):
        self._s = store
        self._began = False
        self._undo: list[tuple] = []
        self.wrote = False

    # -- reads ---------------------------------------------------------------
    def get(self, collection: str, id: str) -> dict | None:
        entry = self._s._mem.get(collection, {}).get(id)
        return None if entry is None else json.loads(entry[1])

    def list(self, collection: str) -> list[dict]:
        return [json.loads(text) for _, text in self._s._mem.get(collection, {}).values()]

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
        docs[id] = (seq, text)

    def delete(self, collection: str, id: str) -> bool:
        docs = self._s._mem.get(collection)
        if not docs or id not in docs:
            return False
        self._begin()
        self._s._db.execute("DELETE FROM docs WHERE collection = ? AND id = ?", (collection, id))
        self._undo.append(("doc", collection, id, docs.pop(id)))
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
            elif kind == "meta":
                if old is None:
                    self._s._meta.pop(b, None)
                else:
                    self._s._meta[b] = old
            else:
                docs = self._s._mem.setdefault(a, {})
                if old is None:
                    docs.pop(b, None)
                else:
                    if b not in docs:
                        resort.add(a)
                    docs[b] = old
        for collection in resort:  # a deleted document came back: restore insertion order
            docs = self._s._mem[collection]
            self._s._mem[collection] = dict(sorted(docs.items(), key=lambda kv: kv[1][0]))
        self._undo.clear()
