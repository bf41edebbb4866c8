"""Writing runs into Tiled: bluesky-tiled-plugins' ``TiledWriter`` plus a check after ``stop``.

:class:`ValidatedTiledWriter` forwards every document to a ``TiledWriter`` (which backs a
failing run up as JSON lines in ``backup_directory``) and, once the ``stop`` document is
written, asks the server to validate the run (``BlueskyRunV3.validate``, served by the
``bluesky_tiled_plugins.routers.validator`` router). Validation fixes what the documents
declared differently from the files, e.g. the ophyd-async ``(N, 1, H, W)`` detector shape
of frames stored ``(N, H, W)``, so clients read the shape that is on disk.

Writing errors are not wrapped: they propagate to the RunEngine as bluesky intends. A run
that fails validation is logged at ERROR with its uid, and raised as
:class:`RunValidationError` when ``raise_on_invalid`` is set.

Examples
--------
::

    from tiled.client import from_uri
    from opmap.callbacks.tiled_writer import ValidatedTiledWriter

    client = from_uri("http://127.0.0.1:8000", api_key=KEY)
    runs = ensure_layout(client)["raw"]
    RE.subscribe(ValidatedTiledWriter(runs, backup_directory="opmap-data/backup"))
"""

from __future__ import annotations

import concurrent.futures
import logging
import warnings
from pathlib import Path
from typing import Any

from bluesky_tiled_plugins import TiledWriter
from bluesky_tiled_plugins.writing.validator import ValidationException
from tiled.client.base import BaseClient

__all__ = [
    "PROCESSED_CONTAINER",
    "RAW_CONTAINER",
    "RunValidationError",
    "ValidatedTiledWriter",
    "ensure_layout",
    "validate_run",
]

logger = logging.getLogger(__name__)

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
        document (the TiledWriter then saved it to its backup directory).
    """
    try:
        run = client[run_uid]
    except KeyError:
        run = None
    if run is None or not run.metadata.get("stop"):
        # TiledWriter abandons a run the server rejected and saves it to its backup.
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

    Parameters
    ----------
    client : tiled.client.base.BaseClient
        Writable catalog of runs on the opmap Tiled server.
    backup_directory : Path or str, optional
        Where a run the server rejects is saved as JSON lines (created if needed).
    raise_on_invalid : bool
        Raise :class:`RunValidationError` (in the RunEngine thread, after ``stop``) when a
        run fails validation; default: log it at ERROR.
    batch_size : int, optional
        Events or stream datums buffered per write (>= 1); 1 makes each visible at once.
        Default: the TiledWriter's (everything is flushed at ``stop`` at the latest).
    background : bool
        Validate in a worker thread so the RunEngine goes on with the next run at once
        (validation reads the data back and takes seconds per map); problems are logged
        with the run uid. Incompatible with ``raise_on_invalid``. `wait` joins it.
    try_reading : bool
        Passed to `validate_run`: False checks the structure only (a consumer that reads
        every frame anyway, like the rehearsal's live analysis, is the reading check).
    """

    def __init__(
        self,
        client: BaseClient,
        *,
        backup_directory: Path | str | None = None,
        raise_on_invalid: bool = False,
        batch_size: int | None = None,
        background: bool = False,
        try_reading: bool = True,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if background and raise_on_invalid:
            raise ValueError("background=True cannot raise_on_invalid in the RunEngine thread")
        self._validator = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tiled-validate")
            if background
            else None
        )
        self._pending: list[concurrent.futures.Future] = []
        if backup_directory is not None:
            Path(backup_directory).mkdir(parents=True, exist_ok=True)
        self.client = client
        self.raise_on_invalid = raise_on_invalid
        self.try_reading = try_reading
        backup = None if backup_directory is None else str(backup_directory)
        options = {} if batch_size is None else {"batch_size": batch_size}
        self.writer = TiledWriter(client, backup_directory=backup, **options)

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Write one document; after a ``stop`` document, validate that run."""
        self.writer(name, doc)
        if name != "stop":
            return
        if self._validator is None:
            validate_run(
                self.client,
                doc["run_start"],
                raise_on_invalid=self.raise_on_invalid,
                try_reading=self.try_reading,
            )
        else:
            self._pending.append(
                self._validator.submit(
                    _validate_logged, self.client, doc["run_start"], self.try_reading
                )
            )

    def wait(self) -> None:
        """Wait for the background validations submitted so far."""
        pending, self._pending = self._pending, []
        concurrent.futures.wait(pending)


def _validate_logged(client: BaseClient, run_uid: str, try_reading: bool = True) -> bool:
    """`validate_run` for a worker thread: any failure is logged with the uid, not lost."""
    try:
        return validate_run(client, run_uid, try_reading=try_reading)
    except Exception:
        logger.exception("Run %s: validation could not run", run_uid)
        return False
