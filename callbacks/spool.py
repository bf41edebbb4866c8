"""A write-ahead spool of raw documents, and what of a run actually landed in Tiled.

Every document of every run is appended to ``DIR/<start uid>.jsonl`` (one JSON object
``{"name": ..., "doc": ...}`` per line, flushed at once, ``fsync`` at ``stop`` and at
least every ``fsync_interval_s``) *before* it is sent to Tiled. A run whose documents all
landed is dropped from the spool; a run Tiled refused or could not take stays there until
:func:`resend_run` has stored it (``ValidatedTiledWriter`` does that by itself when the
server is back, ``opmap recover`` does it afterwards).

Re-sending is idempotent by run uid: a run already stored whole is left alone; a run
stored only in part is completed: what Tiled holds (nodes, event rows, array rows) is
reused and only the rest is written, so no document is stored twice and nothing is
deleted (the writer key suffices); :func:`recover_spool` then validates and seals each run
it stored whole (`opmap.callbacks.sealing`), and skips a run Tiled holds sealed already.
:func:`tally_run` counts, per run, the documents in
the spool against those found in Tiled (event rows, registered frames, streams, start
and stop).

Examples
--------
>>> import tempfile
>>> spool = RunSpool(tempfile.mkdtemp())
>>> spool.append("start", {"uid": "r1", "time": 0.0})
'r1'
>>> spool.append("stop", {"uid": "s1", "run_start": "r1", "time": 1.0})
'r1'
>>> [name for name, _ in spool.read("r1")]
['start', 'stop']
>>> spool.pending()
['r1']
>>> spool.discard("r1"); spool.pending()
[]
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sealing import is_sealed, seal_run

__all__ = [
    "DocumentRuns",
    "RecoveredRun",
    "RunDigest",
    "RunSpool",
    "RunTally",
    "SpoolError",
    "recover_spool",
    "resend_run",
    "tally_run",
]

logger = logging.getLogger(__name__)

#: Documents that name their run directly, and the key that does.
_RUN_KEYS = {"start": "uid", "stop": "run_start", "descriptor": "run_start"}
_RUN_KEYS |= {"stream_resource": "run_start", "resource": "run_start"}
#: Documents that name a parent document (descriptor or resource), and the key that does.
_PARENT_KEYS = {"event": "descriptor", "event_page": "descriptor", "stream_datum": "descriptor"}
_PARENT_KEYS |= {"datum": "resource", "datum_page": "resource"}


class SpoolError(RuntimeError):
    """A spooled run could not be stored (the message says why and what to do)."""


class DocumentRuns:
    """Which run each document belongs to (descriptors and resources are remembered)."""

    def __init__(self) -> None:
        self._parents: dict[str, str] = {}  # descriptor / resource uid -> run uid

    def run_of(self, name: str, doc: dict[str, Any]) -> str:
        """The start uid of the run ``doc`` belongs to (KeyError for an unknown parent)."""
        if name in _RUN_KEYS:
            run_uid = doc[_RUN_KEYS[name]]
            if name in ("descriptor", "resource", "stream_resource"):
                self._parents[doc["uid"]] = run_uid
            return run_uid
        return self._parents[doc[_PARENT_KEYS[name]]]


class RunSpool:
    """Append-only journal of raw documents, one file per run (``<start uid>.jsonl``).

    Parameters
    ----------
    directory : Path or str
        Where the run files live (created, mode 0700).
    fsync_interval_s : float
        Longest time between two ``fsync`` of a run file (s, >= 0); every document is
        flushed to the operating system at once, so a killed process loses nothing; the
        ``fsync`` protects against a power cut. ``stop`` is always synced.
    """

    def __init__(self, directory: Path | str, *, fsync_interval_s: float = 1.0) -> None:
        if not fsync_interval_s >= 0:
            raise ValueError(f"fsync_interval_s must be >= 0 s; got {fsync_interval_s}")
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fsync_interval_s = fsync_interval_s
        self._files: dict[str, Any] = {}
        self._synced_s: dict[str, float] = {}
        self._runs = DocumentRuns()

    def path(self, run_uid: str) -> Path:
        """The spool file of run ``run_uid``."""
        return self.directory / f"{run_uid}.jsonl"

    def append(self, name: str, doc: dict[str, Any]) -> str:
        """Append one document to its run's file; return the run's uid."""
        run_uid = self._runs.run_of(name, doc)
        handle = self._files.get(run_uid)
        if handle is None:
            fd = os.open(self.path(run_uid), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            handle = self._files[run_uid] = os.fdopen(fd, "a")
            self._synced_s[run_uid] = time.monotonic()
        handle.write(json.dumps({"name": name, "doc": doc}) + "\n")
        handle.flush()
        now = time.monotonic()
        if name == "stop" or now - self._synced_s[run_uid] >= self.fsync_interval_s:
            os.fsync(handle.fileno())
            self._synced_s[run_uid] = now
        if name == "stop":
            handle.close()
            del self._files[run_uid], self._synced_s[run_uid]
        return run_uid

    def read(self, run_uid: str) -> list[tuple[str, dict[str, Any]]]:
        """The documents of a spooled run, in order (a torn last line is dropped and logged)."""
        lines = self.path(run_uid).read_text().splitlines()
        documents = []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # the writer died in the middle of this line
                    logger.warning("Spool %s: dropped a torn last line", self.path(run_uid))
                    break
                raise SpoolError(f"{self.path(run_uid)} line {number} is not JSON") from None
            documents.append((entry["name"], entry["doc"]))
        return documents

    def pending(self) -> list[str]:
        """Uids of the spooled runs, oldest start first."""
        starts = {}
        for path in self.directory.glob("*.jsonl"):
            with path.open() as handle:
                first = handle.readline()
            try:
                starts[path.stem] = float(json.loads(first)["doc"]["time"])
            except (json.JSONDecodeError, KeyError, TypeError):
                starts[path.stem] = path.stat().st_mtime
        return sorted(starts, key=lambda uid: (starts[uid], uid))

    def is_open(self, run_uid: str) -> bool:
        """True while the run's ``stop`` has not come (this process still appends to it)."""
        return run_uid in self._files

    def discard(self, run_uid: str) -> None:
        """Remove a run from the spool (call only once it is stored whole)."""
        handle = self._files.pop(run_uid, None)
        if handle is not None:
            handle.close()
            del self._synced_s[run_uid]
        self.path(run_uid).unlink(missing_ok=True)


@dataclass
class RunTally:
    """Documents of one run: in the spool (emitted) against found in Tiled (stored).

    Attributes
    ----------
    run_uid : str
        The run's start uid.
    emitted : collections.Counter
        Documents per name (``start``, ``descriptor``, ``event``, ``stream_resource``,
        ``stream_datum``, ``stop``; an ``event_page`` counts its events).
    stored : collections.Counter
        The same names, counted from what Tiled holds: the run and its ``stop``
        metadata, stream containers, rows of each stream's event table, registered
        external arrays, and stream datums whose frames the registered array covers.
    doubled : int
        Event rows stored more than once (same stream and ``seq_num``).
    """

    run_uid: str
    emitted: Counter = field(default_factory=Counter)
    stored: Counter = field(default_factory=Counter)
    doubled: int = 0

    @property
    def n_emitted(self) -> int:
        """All documents emitted."""
        return sum(self.emitted.values())

    @property
    def n_stored(self) -> int:
        """All documents found in Tiled."""
        return sum(self.stored.values())

    @property
    def complete(self) -> bool:
        """Every document stored exactly once, ``stop`` included."""
        return self.stored == self.emitted and self.doubled == 0 and self.emitted["stop"] == 1

    def line(self) -> str:
        """One summary line: ``uid: stored/emitted documents`` and what is missing."""
        missing = self.emitted - self.stored
        text = f"{self.run_uid[:8]}: {self.n_stored}/{self.n_emitted} documents stored"
        if missing:
            text += " (missing " + ", ".join(f"{n} {k}" for k, n in sorted(missing.items())) + ")"
        if self.doubled:
            text += f" ({self.doubled} event rows doubled)"
        return text


@dataclass
class RunDigest:
    """What a run's documents declare, enough to count them against Tiled (no event data).

    Attributes
    ----------
    run_uid : str
        The run's start uid ("" until the ``start`` document is added).
    emitted : collections.Counter
        Documents per name (an ``event_page`` counts its events as ``event``).
    streams : dict
        Descriptor uid -> stream name.
    resources : dict
        Stream resource uid -> data key.
    datum_stops : list of (str, int)
        Each stream datum's resource uid and ``indices["stop"]``.
    start : dict
        The ``start`` document.
    """

    run_uid: str = ""
    start: dict[str, Any] = field(default_factory=dict)
    emitted: Counter = field(default_factory=Counter)
    streams: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    datum_stops: list[tuple[str, int]] = field(default_factory=list)

    def add(self, name: str, doc: dict[str, Any]) -> None:
        """Record one document of the run."""
        self.emitted["event" if name == "event_page" else name] += _n_events(name, doc)
        if name == "start":
            self.run_uid, self.start = doc["uid"], doc
        elif name == "descriptor":
            self.streams[doc["uid"]] = doc["name"]
        elif name == "stream_resource":
            self.resources[doc["uid"]] = doc["data_key"]
        elif name == "stream_datum":
            self.datum_stops.append((doc["stream_resource"], int(doc["indices"]["stop"])))

    @classmethod
    def of(cls, documents: list[tuple[str, dict[str, Any]]]) -> RunDigest:
        """The digest of a run's documents."""
        digest = cls()
        for name, doc in documents:
            digest.add(name, doc)
        return digest


def tally_run(runs: Any, digest: RunDigest) -> RunTally:
    """Count a run's documents against what the catalog ``runs`` holds of it.

    Parameters
    ----------
    runs : tiled.client.container.Container
        The catalog of raw runs.
    digest : RunDigest
        The run's documents as emitted (`RunDigest.of` a spooled run).

    Returns
    -------
    RunTally
    """
    tally = RunTally(digest.run_uid, emitted=+digest.emitted)
    node = _child(runs, digest.run_uid)
    if node is None:
        return tally
    tally.stored["start"] = 1
    tally.stored["stop"] = int(bool(node.metadata.get("stop")))
    nodes = {name: _child(node, name) for name in set(digest.streams.values())}
    tally.stored["descriptor"] = sum(nodes[name] is not None for name in digest.streams.values())
    rows, tally.doubled = _event_rows(nodes)
    tally.stored["event"] = min(rows, digest.emitted["event"])
    resources, datums = _stream_frames(digest, nodes)
    tally.stored["stream_resource"], tally.stored["stream_datum"] = resources, datums
    tally.stored = +tally.stored
    return tally


def _n_events(name: str, doc: dict[str, Any]) -> int:
    return len(doc["seq_num"]) if name == "event_page" else 1


def _child(node: Any, key: str) -> Any:
    """``node[key]`` through the plain container client, or None when absent."""
    base = getattr(node, "base", node)
    try:
        return base[key]
    except KeyError:
        return None


def _event_rows(nodes: dict[str, Any]) -> tuple[int, int]:
    """Rows in the event tables of the streams, and how many repeat a ``seq_num``."""
    rows = doubled = 0
    for node in nodes.values():
        table = None if node is None else _child(node, "internal")
        if table is None:
            continue
        seq_num = table.read(["seq_num"])["seq_num"].to_numpy()
        rows += len(seq_num)
        doubled += len(seq_num) - len(set(seq_num.tolist()))
    return rows, doubled


def _stream_frames(digest: RunDigest, nodes: dict[str, Any]) -> tuple[int, int]:
    """Stream resources registered, and stream datums whose rows the registered arrays hold."""
    lengths: dict[str, int] = {}
    stream_nodes = [node for node in nodes.values() if node is not None]
    for uid, data_key in digest.resources.items():
        array = next((a for n in stream_nodes if (a := _child(n, data_key)) is not None), None)
        if array is not None:
            lengths[uid] = int(array.shape[0]) if array.shape else 0
    datums = sum(stop <= lengths[uid] for uid, stop in digest.datum_stops if uid in lengths)
    return len(lengths), int(datums)


def resend_run(
    runs: Any, documents: list[tuple[str, dict[str, Any]]], *, batch_size: int | None = None
) -> RunTally:
    """Store a spooled run in Tiled, idempotently by uid; return its tally afterwards.

    A run Tiled holds whole is left alone. Otherwise the documents are written again
    through bluesky-tiled-plugins' ``TiledWriter`` into what Tiled holds: nodes that exist
    (the run, its streams, tables, registered frames) are reused, event rows and array
    rows already stored are skipped, frame registrations are replaced by the full one. The
    documents come in the order they were emitted, so "already stored" is a row count.

    Parameters
    ----------
    runs : tiled.client.container.Container
        The catalog of raw runs (writer key: nothing is deleted).
    documents : list of (str, dict)
        The run's documents in order, ``start`` first.
    batch_size : int, optional
        Events or stream datums per write (bluesky-tiled-plugins' default when None).

    Raises
    ------
    SpoolError
        Tiled holds event rows of the run twice (only an admin can repair that), or the
        run is still not whole after the re-send. Transport and HTTP errors propagate.
    """
    from bluesky_tiled_plugins import TiledWriter

    from .dectris_consolidator import register_dectris_consolidator

    register_dectris_consolidator()  # a spooled SIMPLON Eiger run names Dectris links
    digest = RunDigest.of(documents)
    tally = tally_run(runs, digest)
    if tally.stored == tally.emitted and tally.doubled == 0:
        return tally  # every document already stored once: nothing is sent twice
    if tally.doubled:
        raise SpoolError(f"run {tally.run_uid} holds doubled event rows: {tally.line()}")
    if tally.stored["start"]:
        logger.warning("Completing the partly stored run %s: %s", tally.run_uid, tally.line())
    options = {} if batch_size is None else {"batch_size": batch_size}
    writer = TiledWriter(_ReuseStored(runs), **options)
    for name, doc in documents:
        writer(name, doc)
    tally = tally_run(runs, digest)
    if not (tally.stored == tally.emitted and tally.doubled == 0):
        raise SpoolError(f"run {tally.run_uid} is not whole after the re-send: {tally.line()}")
    return tally


class _ReuseStored:
    """A Tiled container client that reuses the children a partly stored run already has."""

    def __init__(self, node: Any) -> None:
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def include_data_sources(self) -> _ReuseStored:
        return _ReuseStored(self._node.include_data_sources())

    @property
    def base(self) -> _ReuseStored:
        return _ReuseStored(self._node.base)

    def create_container(self, key: str, **kwargs: Any) -> _ReuseStored:
        existing = _child(self._node, key)
        if existing is None:
            existing = self._node.create_container(key=key, **kwargs)
        return _ReuseStored(existing)

    def new(self, key: str, **kwargs: Any) -> Any:
        existing = _child(self._node, key)
        return existing if existing is not None else self._node.new(key=key, **kwargs)

    def create_appendable_table(self, schema: Any, key: str, **kwargs: Any) -> Any:
        existing = _child(self._node, key)
        if existing is None:
            return self._node.create_appendable_table(schema=schema, key=key, **kwargs)
        return _SkipStoredRows(existing, len(existing.read(["seq_num"])))

    def write_array(self, array: Any, key: str, **kwargs: Any) -> Any:
        existing = _child(self._node, key)
        if existing is None:
            return self._node.write_array(array, key=key, **kwargs)
        rows = _SkipStoredRows(existing, int(existing.shape[0]))
        rows.patch(array, offset=(0,), extend=True)
        return rows


class _SkipStoredRows:
    """A table or array client that drops the leading rows Tiled already holds."""

    def __init__(self, node: Any, n_stored: int) -> None:
        self._node, self._n_stored, self._sent = node, n_stored, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def _new_rows(self, n_rows: int) -> tuple[int, int]:
        """(first new row in this batch, its global index); advances the row count."""
        first_global = self._sent
        self._sent += n_rows
        skip = min(n_rows, max(0, self._n_stored - first_global))
        return skip, first_global + skip

    def append_partition(self, partition: int, table: Any) -> None:
        skip, _ = self._new_rows(table.num_rows)
        if skip < table.num_rows:
            self._node.append_partition(partition, table.slice(skip))

    def patch(self, array: Any, offset: Any, extend: bool = False) -> None:
        skip, start = self._new_rows(len(array))
        if skip < len(array):
            self._node.patch(array[skip:], offset=(start,), extend=extend)


@dataclass(frozen=True)
class RecoveredRun:
    """What ``opmap recover`` did with one spooled run.

    Attributes
    ----------
    tally : RunTally
        Documents in the spool against stored in Tiled, after the re-send.
    stored_before : int
        Documents Tiled held of the run before.
    error : str
        Why the run could not be stored ("" when it was).
    sealed : bool
        The run was stored whole with its ``stop``, validated and sealed by this recovery.
    already_sealed : bool
        Tiled held the run whole and sealed before: nothing was sent (skipped).
    seal_error : str
        Why a run stored whole could not be validated or sealed ("" otherwise): it is
        stored, but the writer key can still change it.
    """

    tally: RunTally
    stored_before: int
    error: str = ""
    sealed: bool = False
    already_sealed: bool = False
    seal_error: str = ""

    @property
    def stored(self) -> bool:
        """Every spooled document is in Tiled once (a run without ``stop`` may be)."""
        tally = self.tally
        return not self.error and tally.stored == tally.emitted and tally.doubled == 0

    def line(self) -> str:
        """``uid: in spool N, stored M (before K)`` and what is wrong, if anything."""
        tally = self.tally
        text = (
            f"{tally.run_uid}: {tally.n_emitted} documents in the spool, "
            f"{tally.n_stored} stored (before: {self.stored_before})"
        )
        if self.error:
            return f"{text}; NOT STORED: {self.error}"
        if self.already_sealed:
            return f"{text}; already stored and sealed: skipped"
        if not tally.emitted["stop"]:
            text += "; no stop document: the run was interrupted (opmap resume closes it)"
        elif self.sealed:
            text += "; sealed"
        elif self.seal_error:
            text += f"; NOT SEALED: {self.seal_error}"
        return text


def recover_spool(runs: Any, spool: RunSpool, *, seal: bool = True) -> list[RecoveredRun]:
    """Re-send every run left in ``spool``, oldest first; drop those stored whole.

    Parameters
    ----------
    runs : tiled.client.container.Container
        The catalog of raw runs (writer key).
    spool : RunSpool
        The spool to empty.
    seal : bool
        Seal each run stored whole with its ``stop`` once it is validated, as the live
        writer does (`opmap.callbacks.sealing`; default). A run Tiled holds sealed
        already is not touched: skipped when whole, reported (and kept) when not.

    Returns
    -------
    list of RecoveredRun
        One per spooled run; runs not stored stay in the spool.
    """
    results = []
    for run_uid in spool.pending():
        documents = spool.read(run_uid)
        digest = RunDigest.of(documents)
        result = _recover_run(runs, run_uid, documents, digest, seal)
        if result.stored and result.tally.emitted["stop"]:
            spool.discard(run_uid)
        results.append(result)
    return results


def _recover_run(
    runs: Any,
    run_uid: str,
    documents: list[tuple[str, dict[str, Any]]],
    digest: RunDigest,
    seal: bool,
) -> RecoveredRun:
    """Store one spooled run (unless Tiled holds it sealed), then validate and seal it."""
    before = tally_run(runs, digest) if digest.run_uid else RunTally(run_uid, +digest.emitted)
    node = _child(runs, digest.run_uid) if digest.run_uid else None
    if node is not None and is_sealed(node.metadata):
        if before.complete:
            return RecoveredRun(before, before.n_stored, already_sealed=True)
        error = (
            f"Tiled holds this run sealed but not whole ({before.line()}): only an admin "
            "key can complete it"
        )
        return RecoveredRun(before, before.n_stored, error)
    try:
        if not digest.run_uid:
            raise SpoolError("the spool file has no start document")
        tally = resend_run(runs, documents)
    except Exception as exc:  # reported per run; the others are still tried
        logger.exception("Run %s could not be re-sent", run_uid)
        tally = tally_run(runs, digest) if digest.run_uid else before
        return RecoveredRun(tally, before.n_stored, f"{type(exc).__name__}: {exc}")
    if not (seal and tally.complete):
        return RecoveredRun(tally, before.n_stored)
    problem = _validate_and_seal(runs, digest.run_uid)
    return RecoveredRun(tally, before.n_stored, sealed=not problem, seal_error=problem)


def _validate_and_seal(runs: Any, run_uid: str) -> str:
    """Validate a run stored whole (fixing declared shapes), then seal it; "" when sealed,
    else why not (logged): the run stays stored, open to the writer key."""
    from .tiled_writer import validate_run  # the writer module imports this one

    try:
        validate_run(runs, run_uid)
        seal_run(runs, run_uid)
    except Exception as exc:
        logger.exception("Run %s is stored but could not be validated and sealed", run_uid)
        return f"{type(exc).__name__}: {exc}"
    return ""
