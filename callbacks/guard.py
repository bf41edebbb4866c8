"""Keep live-analysis errors from aborting acquisition.

bluesky runs every subscribed callback in the RunEngine thread, and an exception raised by
one aborts the run (``exit_status="fail"``). Live analysis is not critical: a run must
complete even when a fit fails on a strange frame. :class:`GuardedCallback` wraps such a
callback: an exception is logged with the run uid and the document name, counted, and
swallowed; at ``stop`` the failures of that run are reported in one WARNING.

Never wrap the data-writing path (the TiledWriter): a writing error must reach the
RunEngine, as bluesky intends, so nobody believes data were stored that were not.

Examples
--------
::

    RE.subscribe(ValidatedTiledWriter(runs))                    # unguarded, on purpose
    RE.subscribe(GuardedCallback(RunRouter([live_factory])))    # analysis, guarded
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["GuardedCallback"]

logger = logging.getLogger(__name__)

DocumentCallback = Callable[[str, Mapping[str, Any]], Any]


class GuardedCallback:
    """Call ``callback`` with every document; log and count its exceptions, never raise.

    Parameters
    ----------
    callback : callable
        ``callback(name, doc)``: the live analysis (a ``RunRouter``, a ``DocumentRouter``).
    name : str, optional
        Name in log messages (default: the callback's class name).

    Attributes
    ----------
    failures : collections.Counter
        Exceptions per run uid since construction (``""`` when no run is open).
    total_failures : int
        All exceptions caught since construction.
    """

    def __init__(self, callback: DocumentCallback, *, name: str | None = None) -> None:
        if not callable(callback):
            raise ValueError(f"callback must be callable, got {type(callback).__name__}")
        self.callback = callback
        self.name = name or type(callback).__name__
        self.failures: Counter[str] = Counter()
        self.total_failures = 0
        self._run_uid = ""

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        """Forward one document; an exception is logged and counted, not raised."""
        if name == "start":
            self._run_uid = str(doc.get("uid", ""))
        run_uid = _run_uid_of(name, doc) or self._run_uid
        try:
            self.callback(name, doc)
        except Exception:
            self.failures[run_uid] += 1
            self.total_failures += 1
            logger.exception(
                "%s failed on %r document of run %s (failure %d of this run); "
                "acquisition continues",
                self.name,
                name,
                run_uid or "<none>",
                self.failures[run_uid],
            )
        if name == "stop":
            self._report(run_uid)

    def _report(self, run_uid: str) -> None:
        count = self.failures.get(run_uid, 0)
        if count:
            logger.warning(
                "%s: %d document(s) of run %s failed in the live analysis; the raw data are "
                "complete, replay the run offline (opmap analyze) for full products",
                self.name,
                count,
                run_uid,
            )


def _run_uid_of(name: str, doc: Mapping[str, Any]) -> str:
    if name == "start":
        return str(doc.get("uid", ""))
    return str(doc.get("run_start", "") or "")
