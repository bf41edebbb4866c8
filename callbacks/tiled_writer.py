"""Writing runs into Tiled: bluesky-tiled-plugins' ``TiledWriter`` plus a check after ``stop``.

:class:`ValidatedTiledWriter` spools every document to disk (``spool_directory``, see
`opmap.callbacks.spool`), forwards it to a ``TiledWriter`` (one per run; a run Tiled does
not take goes on into the spool and is re-sent when the server is back) and, once the
``stop`` document is written, asks the server to validate the run
(``BlueskyRunV3.validate``, served by the ``bluesky_tiled_plugins.routers.validator``
router). Validation fixes what the documents
declared differently from the files, e.g. the ophyd-async ``(N, 1, H, W)`` detector shape
of frames stored ``(N, H, W)``, so clients read the shape that is on disk.

Importing this module registers `opmap.callbacks.dectris_consolidator` with the
TiledWriter, so runs of a SIMPLON Eiger (frames behind a Dectris master's per-file links)
become Tiled arrays read from the data files.

Without a spool, writing errors are not wrapped: they propagate to the RunEngine as
bluesky intends. A run that fails validation is logged at ERROR with its uid, and raised as
:class:`RunValidationError` when ``raise_on_invalid`` is set.

Examples
--------
::

    from tiled.client import from_uri
    from opmap.callbacks.tiled_writer import ValidatedTiledWriter

    client = from_uri("http://127.0.0.1:8000", api_key=KEY)
    runs = ensure_layout(client)["raw"]
    RE.subscribe(ValidatedTiledWriter(runs, spool_directory="opmap-data/backup"))
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
from bluesky_tiled_plugins import TiledWriter
from bluesky_tiled_plugins.writing.validator import ValidationException
from tiled.client.base import BaseClient

from .dectris_consolidator import register_dectris_consolidator
from .sealing import seal_run
from .spool import DocumentRuns, RunDigest, RunSpool, RunTally, resend_run, tally_run

__all__ = [
    "PROCESSED_CONTAINER",
    "RAW_CONTAINER",
    "RunValidationError",
    "ValidatedTiledWriter",
    "ensure_layout",
    "validate_run",
]

logger = logging.getLogger(__name__)
# Tiled's run validation reports each structure fix as a UserWarning, which `validate_run`
# records and logs at INFO with the run's uid. `warnings.catch_warnings` is process-global
# and not thread-safe: when the live analysis's thread enters and leaves its own
# catch_warnings meanwhile, a fix can escape the recording and reach the user's terminal as
# a bare UserWarning. This filter keeps those (already handled) fixes off the terminal.
warnings.filterwarnings("ignore", message="Structure validation of", category=UserWarning)

# Runs of a SIMPLON Eiger describe their frames as Dectris per-file links.
register_dectris_consolidator()

#: Top-level container of raw runs (spec ``CatalogOfBlueskyRuns`` 3.0: ``raw[uid]``,
#: ``raw[scan_id]``, ``raw[-1]``).
RAW_CONTAINER = "raw"
#: Top-level container of derived products, linked to raw runs by uid in metadata.
PROCESSED_CONTAINER = "processed"


def ensure_layout(client: BaseClient) -> dict[str, BaseClient]:
    """Create (if missing) and return the ``raw`` and ``processed`` containers of the server.

    Raw runs and products live side by side, so a product never appears inside a run
    and ``processed`` keys are plain names (the runs catalog interprets keys as uids).

    Returns
    -------
    dict
        ``{"raw": <CatalogOfBlueskyRuns>, "processed": <Container>}``.
    """
    from tiled.structures.core import Spec

    specs = {RAW_CONTAINER: [Spec("CatalogOfBlueskyRuns", version="3.0")], PROCESSED_CONTAINER: []}
    for key, key_specs in specs.items():
        if key not in client:
            client.create_container(key, specs=key_specs)
    return {key: client[key] for key in specs}


class RunValidationError(RuntimeError):
    """A run in Tiled does not match its data files (raised only on request)."""


def validate_run(
    client: BaseClient, run_uid: str, *, raise_on_invalid: bool = False, try_reading: bool = True
) -> bool:
    """Validate one run on the server, fixing declared shapes to match the files.

    Parameters
    ----------
    client : tiled.client.base.BaseClient
        The catalog of runs (the node the TiledWriter writes into).
    run_uid : str
        The run's start uid.
    raise_on_invalid : bool
        Raise :class:`RunValidationError` instead of only logging an invalid run.
    try_reading : bool
        Also read the first and last element of every external array on the server. Costly
        for the Eiger's master file: Tiled's HDF5 adapter makes one dask chunk of a
        virtual dataset, so one element decompresses the whole map.

    Returns
    -------
    bool
        True when the run is valid (possibly after fixes, which are logged at INFO);
        False when it is invalid, missing, or was abandoned without its ``stop``
        document (it is then in the spool, to be re-sent).
    """
    try:
        run = client[run_uid]
    except KeyError:
        run = None
    if run is None or not run.metadata.get("stop"):
        # a run the server rejected is abandoned by its TiledWriter (and spooled)
        return _invalid(run_uid, "is missing or has no stop document in Tiled", raise_on_invalid)
    with warnings.catch_warnings(record=True) as notes:
        # The client reports each fix as a warning; they become log records with the uid.
        warnings.simplefilter("always")
        try:
            run.validate(fix_errors=True, try_reading=try_reading, raise_on_error=True)
        except ValidationException as error:
            reason = error.args[0] if error.args else error
            return _invalid(run_uid, f"failed validation: {reason}", raise_on_invalid)
    for note in notes:
        logger.info("Run %s: %s", run_uid, note.message)
    return True


def _invalid(run_uid: str, problem: str, raise_on_invalid: bool) -> bool:
    logger.error("Run %s %s", run_uid, problem)
    if raise_on_invalid:
        raise RunValidationError(f"run {run_uid} {problem}")
    return False


class ValidatedTiledWriter:
    """Document callback: write runs with ``TiledWriter``, validate each after ``stop``.

    With a ``spool_directory``, nothing is lost when Tiled is down or refuses: every
    document is first appended to the spool (`opmap.callbacks.spool.RunSpool`); a run
    whose writing fails is abandoned by ``TiledWriter`` and goes on into the spool only,
    and so does every later run while an earlier one waits (runs reach Tiled in order).
    A background thread re-sends each spooled run after its ``stop``, retrying until the
    server takes it (`opmap.callbacks.spool.resend_run`: idempotent by uid; a run stored
    in part is completed, never doubled). A run stored whole is removed from the spool,
    and sealed when the next run starts or in `wait` (`opmap.callbacks.sealing`: on the
    opmap server only an admin key may then change it); what is left in the spool is for
    ``opmap recover``.

    Parameters
    ----------
    client : tiled.client.base.BaseClient
        Writable catalog of runs on the opmap Tiled server.
    spool_directory : Path or str, optional
        The spool (created if needed). Without it, writing errors propagate to the
        RunEngine, as bluesky intends.
    raise_on_invalid : bool
        Raise :class:`RunValidationError` (in the RunEngine thread, after ``stop``) when a
        run fails validation; default: log it at ERROR.
    batch_size : int, optional
        Events or stream datums buffered per write (>= 1); 1 makes each visible at once.
        Default: the TiledWriter's (everything is flushed at ``stop`` at the latest).
    background : bool
        Validate in the background thread so the RunEngine goes on with the next run at
        once (validation reads the data back and takes seconds per map); problems are
        logged with the run uid. Incompatible with ``raise_on_invalid``. `wait` joins it.
    try_reading : bool
        Passed to `validate_run`: False checks the structure only (a consumer that reads
        every frame anyway, like the rehearsal's live analysis, is the reading check).
    retry_s : float
        First wait between two re-send attempts (s, > 0; doubles up to 30 s).
    backup_directory : Path or str, optional
        The former name of ``spool_directory``.
    seal : bool
        Seal each run once it is stored whole and validated (default). False leaves runs
        open to later writes by the writer key (tests that write into a run afterwards).
    """

    def __init__(
        self,
        client: BaseClient,
        *,
        spool_directory: Path | str | None = None,
        raise_on_invalid: bool = False,
        batch_size: int | None = None,
        background: bool = False,
        try_reading: bool = True,
        retry_s: float = 2.0,
        backup_directory: Path | str | None = None,
        seal: bool = True,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if background and raise_on_invalid:
            raise ValueError("background=True cannot raise_on_invalid in the RunEngine thread")
        if not retry_s > 0:
            raise ValueError(f"retry_s must be > 0 s; got {retry_s}")
        directory = spool_directory if spool_directory is not None else backup_directory
        self.spool = None if directory is None else RunSpool(directory)
        self.client = client
        self.raise_on_invalid = raise_on_invalid
        self.try_reading = try_reading
        self.background = background
        self.retry_s = retry_s
        self.seal = seal
        self._options = {} if batch_size is None else {"batch_size": batch_size}
        self._runs = DocumentRuns()
        self._writers: dict[str, TiledWriter | None] = {}  # None: the run goes to the spool
        self.digests: dict[str, RunDigest] = {}
        #: Runs that could not be stored, with the reason (they stay in the spool).
        self.failed: dict[str, str] = {}
        #: Runs stored whole that could not be sealed (see `_seal_whole_runs`).
        self.unsealed: list[str] = []
        self._whole: list[str] = []  # stored whole, validated, not sealed yet
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._spooled_waiting = 0  # spooled runs not yet stored: later runs queue behind
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Spool one document, write it unless its run is spooled; after ``stop``, settle."""
        run_uid = self.spool.append(name, doc) if self.spool else self._runs.run_of(name, doc)
        if name == "start":
            if self.background:  # after the earlier runs' validations (the queue is FIFO)
                self._submit("seal", run_uid)
            else:
                self._seal_whole_runs()
            self.digests[run_uid] = RunDigest()
            with self._lock:
                spooled = self.spool is not None and self._spooled_waiting > 0
            self._writers[run_uid] = None if spooled else TiledWriter(self.client, **self._options)
        self.digests.setdefault(run_uid, RunDigest(run_uid)).add(name, doc)
        writer = self._writers.get(run_uid)
        if writer is not None:
            self._write(writer, run_uid, name, doc)
        if name == "stop":
            self._settle(run_uid)

    def _write(self, writer: TiledWriter, run_uid: str, name: str, doc: dict[str, Any]) -> None:
        try:
            writer(name, doc)
        except Exception as error:
            if self.spool is None:
                raise
            logger.warning(
                "Run %s: Tiled did not take a %r document (%s); the run goes on into the "
                "spool %s and is re-sent when the server takes it",
                run_uid,
                name,
                _reason(error),
                self.spool.directory,
            )
            self._writers[run_uid] = None

    def _settle(self, run_uid: str) -> None:
        """After ``stop``: validate a written run, or queue a spooled one for re-sending."""
        spooled = self._writers.pop(run_uid, "not started here") is None
        if spooled:
            with self._lock:
                self._spooled_waiting += 1
            self._submit("resend", run_uid)
        elif self.background:
            self._submit("validate", run_uid)
        else:
            validate_run(
                self.client,
                run_uid,
                raise_on_invalid=self.raise_on_invalid,
                try_reading=self.try_reading,
            )
            self._forget_if_whole(run_uid)

    def _submit(self, task: str, run_uid: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="tiled-validate-and-resend", daemon=True
            )
            self._thread.start()
        self._queue.put((task, run_uid))

    def _work(self) -> None:
        while True:
            task, run_uid = self._queue.get()
            try:
                if task == "validate":
                    _validate_logged(self.client, run_uid, self.try_reading)
                    self._forget_if_whole(run_uid)
                elif task == "seal":
                    self._seal_whole_runs()
                else:
                    self._resend_until_stored(run_uid)
            except Exception as error:  # logged with the uid; the run stays in the spool
                logger.exception("Run %s: could not be settled", run_uid)
                self.failed[run_uid] = _reason(error)
            finally:
                self._queue.task_done()

    def _forget_if_whole(self, run_uid: str) -> None:
        """Mark a live-written run for sealing and drop it from the spool once Tiled holds
        every document once (without a spool: mark it, nothing could be re-sent anyway)."""
        if self.spool is None:
            self._whole.append(run_uid)
            return
        tally = tally_run(self.client, self.digests[run_uid])
        if tally.complete:
            self._whole.append(run_uid)
            self.spool.discard(run_uid)
        else:
            logger.error("Run %s is not whole in Tiled: %s; re-sending it", run_uid, tally.line())
            with self._lock:
                self._spooled_waiting += 1
            self._submit("resend", run_uid)

    def _seal_whole_runs(self) -> None:
        """Seal the runs stored whole so far (`opmap.callbacks.sealing`): from then on the
        writer key cannot change them.

        Called when the next run starts and by `wait`, never at a run's own ``stop``:
        other callbacks may still annotate a run right after its ``stop`` (the calibration
        writes its result into the run's metadata). A run that could not be sealed stays
        stored and open to the writer key: it is logged at ERROR and listed in `unsealed`.
        """
        while self._whole:
            run_uid = self._whole.pop(0)
            if not self.seal:
                continue
            try:
                seal_run(self.client, run_uid)
            except Exception:
                logger.exception("Run %s is stored but could not be sealed", run_uid)
                self.unsealed.append(run_uid)

    def _resend_until_stored(self, run_uid: str) -> None:
        """Re-send a spooled run, retrying while the server is unreachable or failing."""
        wait_s = self.retry_s
        try:
            while True:
                try:
                    documents = self.spool.read(run_uid)
                    tally = resend_run(self.client, documents, **self._options)
                    break
                except Exception as error:
                    if not _transient(error):
                        raise
                    logger.warning("Run %s: Tiled still unavailable (%s)", run_uid, _reason(error))
                    time.sleep(wait_s)
                    wait_s = min(2 * wait_s, 30.0)
            logger.warning("Run %s re-sent from the spool: %s", run_uid, tally.line())
            validate_run(self.client, run_uid)
            if tally.complete:
                self._whole.append(run_uid)
            self.spool.discard(run_uid)
        finally:
            with self._lock:
                self._spooled_waiting -= 1

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the validations and re-sends submitted so far.

        Parameters
        ----------
        timeout_s : float, optional
            Longest wait (s); None waits as long as it takes.

        Returns
        -------
        bool
            True when everything submitted is settled (stored, or given up in `failed`);
            the runs stored whole are then sealed.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        self._seal_whole_runs()
        return True

    def tallies(self) -> list[RunTally]:
        """Per run written by this callback: documents emitted against found in Tiled.

        A run Tiled cannot be asked about (server down) counts as nothing stored.
        """
        tallies = []
        for run_uid, digest in self.digests.items():
            try:
                tallies.append(tally_run(self.client, digest))
            except Exception as error:
                logger.error("Run %s: cannot count it in Tiled (%s)", run_uid, _reason(error))
                tallies.append(RunTally(run_uid, emitted=+digest.emitted))
        return tallies


def _transient(error: BaseException) -> bool:
    """True for errors worth retrying: no connection, timeouts, 5xx and 429 answers."""
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500 or error.response.status_code == 429
    cause = error.__cause__ or error.__context__
    return cause is not None and _transient(cause)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _validate_logged(client: BaseClient, run_uid: str, try_reading: bool = True) -> bool:
    """`validate_run` for a worker thread: any failure is logged with the uid, not lost."""
    try:
        return validate_run(client, run_uid, try_reading=try_reading)
    except Exception:
        logger.exception("Run %s: validation could not run", run_uid)
        return False
