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

Snapshots: ``snapshot()`` takes the lock only long enough to note the current maps (a few
dict references) and hands out a read-only view (``Snapshot``, the read API of ``Tx``) that
stays as it was while writers go on. The server runs read-only requests on one, so that
building and serialising a large or slow answer never holds the lock (README "For handler
authors"). It works by copy-on-write: every mutable map of the mirror (a collection, the
meta, an index and its buckets) is a ``_Map`` tagged with the generation it was made in;
taking a snapshot starts a new generation, and a writer copies a map of an older generation
before changing it. Documents themselves are never changed in place (``put`` stores a fresh
decode), so sharing them is safe.
"""

from __future__ import annotations

import abc
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


class _Map(dict):
    """A dict of the mirror, tagged with the generation in which it may be changed in place."""

    __slots__ = ("gen",)

    def __init__(self, gen: int, *args):
        super().__init__(*args)
        self.gen = gen


_FROZEN = -1  # the generation of maps built by a snapshot: never changed in place


class Store:
    """SQLite file plus memory mirror; see module docstring."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._gen = 0
        if self.path != ":memory:":
            from pim_emulator.files import create_private

            create_private(self.path)  # SQLite gives its -wal and -shm the database file's mode
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # collection -> {id: (seq, json_text, decoded)}; dict order == insertion order (seq ascending)
        self._mem: dict[str, _Map] = {}
        # collection -> prop -> casefolded string value -> {id: None} (built lazily, see find())
        self._idx: dict[str, dict[str, _Map]] = {}
        # collection -> number of changes (for caches derived from a collection, see key_union())
        self._version: dict[str, int] = {}
        self._key_cache: dict[str, tuple[int, frozenset]] = {}
        self._meta: _Map = _Map(0)
        self._seq = 0
        for collection, doc_id, seq, doc in self._db.execute("SELECT collection, id, seq, doc FROM docs ORDER BY seq"):
            self._docs_w(collection)[doc_id] = (seq, doc, json.loads(doc))
            self._seq = max(self._seq, seq)
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            self._meta[key] = value
        self._closed = False

    # -- copy-on-write (called with the lock held) ----------------------------------------------
    def _docs_w(self, collection: str) -> _Map:
        """The map of ``collection``, made writable (copied if a snapshot may hold it)."""
        docs = self._mem.get(collection)
        if docs is None or docs.gen != self._gen:
            docs = self._mem[collection] = _Map(self._gen, docs or ())
        return docs

    def _meta_w(self) -> _Map:
        if self._meta.gen != self._gen:
            self._meta = _Map(self._gen, self._meta)
        return self._meta

    def _index_w(self, collection: str, prop: str) -> _Map:
        by_prop = self._idx[collection]
        index = by_prop[prop]
        if index.gen != self._gen:
            index = by_prop[prop] = _Map(self._gen, index)
        return index

    def _bucket_w(self, index: _Map, key: str) -> _Map:
        ids = index.get(key)
        if ids is None or ids.gen != self._gen:
            ids = index[key] = _Map(self._gen, ids or ())
        return ids

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """A read-only view of the committed state; the lock is held only to take it. Inside a
        transaction of this thread, that transaction is used instead (it may hold writes)."""
        current = getattr(self._local, "tx", None)
        if current is not None:
            yield current
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("store is closed")
            snap = Snapshot(self)
            self._gen += 1  # from now on, writers copy what the snapshot shares
        yield snap

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

    def close(self, timeout: float | None = None) -> bool:
        """Checkpoint and close. With ``timeout``, give up (False) if a transaction still holds
        the lock by then: the process is exiting, and SQLite rolls that transaction back."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            if self._closed:
                return True
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            return True
        finally:
            self._lock.release()

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
        for prop in list(self._idx.get(collection, {})):
            before = _index_key(old[2].get(prop)) if old is not None else None
            after = _index_key(new[2].get(prop)) if new is not None else None
            if before == after:
                continue
            index = self._index_w(collection, prop)
            if before is not None and before in index:
                ids = self._bucket_w(index, before)
                ids.pop(id, None)
                if not ids:
                    del index[before]
            if after is not None:
                self._bucket_w(index, after)[id] = None

    def _index(self, collection: str, prop: str) -> _Map:
        by_prop = self._idx.setdefault(collection, {})
        index = by_prop.get(prop)
        if index is None:
            index = by_prop[prop] = _build_index(self._mem.get(collection, {}), prop, self._gen)
        return index

    def _adopt_index(self, collection: str, prop: str, version: int, index: _Map) -> None:
        """Keep an index a snapshot built, if the collection has not changed since (no waiting:
        if a writer holds the lock, the index is simply built again later)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._version.get(collection, 0) == version and not self._closed:
                self._idx.setdefault(collection, {}).setdefault(prop, index)
        finally:
            self._lock.release()

    # counts for diagnostics (no lock needed for a rough figure)
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(docs) for name, docs in self._mem.items() if docs}


def _index_key(value) -> str | None:
    return value.casefold() if isinstance(value, str) else None


def _build_index(docs, prop: str, gen: int) -> _Map:
    index = _Map(gen)
    for doc_id, entry in docs.items():
        key = _index_key(entry[2].get(prop))
        if key is not None:
            ids = index.get(key)
            if ids is None:
                ids = index[key] = _Map(gen)
            ids[doc_id] = None
    return index


_NO_DOCS: dict = {}


class _Reader(abc.ABC):
    """The read API shared by ``Tx`` (the live state) and ``Snapshot`` (a frozen one)."""

    _s: Store

    # what the reads look at; Tx: the store's current maps, Snapshot: the ones it took
    @abc.abstractmethod
    def _docs(self, collection: str): ...

    @abc.abstractmethod
    def _meta_map(self): ...

    @abc.abstractmethod
    def _version(self, collection: str) -> int: ...

    @abc.abstractmethod
    def _index(self, collection: str, prop: str): ...

    def get(self, collection: str, id: str) -> dict | None:
        """A fresh copy of one document (the caller may mutate it), or None."""
        entry = self._docs(collection).get(id)
        return None if entry is None else json.loads(entry[1])

    def peek(self, collection: str, id: str) -> dict | None:
        """The mirror's own object for one document, or None. Read-only: never mutate it."""
        entry = self._docs(collection).get(id)
        return None if entry is None else entry[2]

    def list(self, collection: str, copy: bool = True) -> list[dict]:
        """Documents in insertion order; ``copy=False`` returns the mirror's objects (read-only)."""
        entries = self._docs(collection).values()
        if copy:
            return [json.loads(entry[1]) for entry in entries]
        return [entry[2] for entry in entries]

    def iter(self, collection: str) -> Iterator[dict]:
        """The mirror's objects in insertion order, without copying. Read-only: never mutate them,
        and do not write to ``collection`` while iterating."""
        for entry in self._docs(collection).values():
            yield entry[2]

    def find(self, collection: str, prop: str, value) -> list[str]:
        """Ids (insertion order) of the documents whose top-level ``prop`` is the string ``value``,
        compared case-insensitively (casefold). A non-string ``value`` matches nothing."""
        key = _index_key(value)
        if key is None:
            return []
        ids = self._index(collection, prop).get(key)
        if not ids:
            return []
        if len(ids) == 1:
            return list(ids)
        docs = self._docs(collection)
        return sorted(ids, key=lambda i: docs[i][0])

    def find_docs(self, collection: str, prop: str, value) -> list[dict]:
        """``find`` returning the mirror's objects (read-only)."""
        docs = self._docs(collection)
        return [docs[i][2] for i in self.find(collection, prop, value)]

    def order(self, collection: str, ids) -> list[str]:
        """``ids`` that exist in ``collection``, deduplicated, in insertion order."""
        docs = self._docs(collection)
        return sorted({i for i in ids if i in docs}, key=lambda i: docs[i][0])

    def key_union(self, collection: str) -> frozenset:
        """Every top-level key some document of ``collection`` has (cached until it changes)."""
        version = self._version(collection)
        cached = self._s._key_cache.get(collection)
        if cached is not None and cached[0] == version:
            return cached[1]
        keys = set()
        for entry in self._docs(collection).values():
            keys.update(entry[2])
        result = frozenset(keys)
        self._s._key_cache[collection] = (version, result)  # keyed by version: right for any reader
        return result

    def ids(self, collection: str) -> list[str]:
        """Ids of a collection in insertion order (cheap; no documents decoded)."""
        return list(self._docs(collection))

    def count(self, collection: str) -> int:
        return len(self._docs(collection))

    def meta_get(self, key: str, default=None):
        text = self._meta_map().get(key)
        return default if text is None else json.loads(text)


class Snapshot(_Reader):
    """The committed state as it was when ``Store.snapshot()`` was called; reads only."""

    def __init__(self, store: Store):
        self._s = store
        self._mem = dict(store._mem)
        self._meta = store._meta
        self._versions = dict(store._version)
        self._idx = {collection: dict(by_prop) for collection, by_prop in store._idx.items()}
        self.wrote = False

    def _docs(self, collection: str):
        return self._mem.get(collection, _NO_DOCS)

    def _meta_map(self):
        return self._meta

    def _version(self, collection: str) -> int:
        return self._versions.get(collection, 0)

    def _index(self, collection: str, prop: str):
        by_prop = self._idx.setdefault(collection, {})
        index = by_prop.get(prop)
        if index is None:
            index = by_prop[prop] = _build_index(self._docs(collection), prop, _FROZEN)
            self._s._adopt_index(collection, prop, self._version(collection), index)
        return index

    def _read_only(self, *args, **kwargs):
        raise RuntimeError("a snapshot is read-only: write in Store.transaction()")

    put = delete = meta_put = meta_delete = clear = _read_only


class Tx(_Reader):
    """One transaction; obtained only from ``Store.transaction()``."""

    def __init__(self, store: Store):
        self._s = store
        self._began = False
        self._undo: list[tuple] = []
        self.wrote = False

    def _docs(self, collection: str):
        return self._s._mem.get(collection, _NO_DOCS)

    def _meta_map(self):
        return self._s._meta

    def _version(self, collection: str) -> int:
        return self._s._version.get(collection, 0)

    def _index(self, collection: str, prop: str):
        return self._s._index(collection, prop)

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
        docs = self._s._docs_w(collection)
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
        old = self._s._docs_w(collection).pop(id)
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
        self._s._meta_w()[key] = text

    def meta_delete(self, key: str) -> bool:
        if key not in self._s._meta:
            return False
        self._begin()
        self._s._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        self._undo.append(("meta", None, key, self._s._meta_w().pop(key)))
        return True

    def clear(self) -> None:
        self._begin()
        self._s._db.execute("DELETE FROM docs")
        self._s._db.execute("DELETE FROM meta")
        self._undo.append(("all", self._s._mem, self._s._meta, self._s._seq))
        self._s._mem = {}
        self._s._meta = _Map(self._s._gen)
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
                    self._s._meta_w().pop(b, None)
                else:
                    self._s._meta_w()[b] = old
            else:
                docs = self._s._docs_w(a)
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
            self._s._mem[collection] = _Map(self._s._gen, sorted(docs.items(), key=lambda kv: kv[1][0]))
        self._undo.clear()
