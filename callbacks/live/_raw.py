"""Is a raw map run completely in Tiled? Products claim a map only when it is.

A run lands completely when its ``stop`` document is stored, says ``success``, and every
stream holds as many events as the ``stop`` document counts (``num_events``). The runs of
a map joined from a failed run and its resumes must each be stored whole, whatever their
exit status. A run whose
server died mid-map, which landed only in the TiledWriter's backup, or which was aborted
fails one of these.
"""

from __future__ import annotations

from typing import Any

__all__ = ["raw_run_problem"]


def raw_run_problem(runs: Any, uid: str, *, any_exit_status: bool = False) -> str | None:
    """What is missing from the raw run ``uid`` in Tiled, or None when it is complete.

    Parameters
    ----------
    runs : tiled container
        The catalog of raw runs (``raw``).
    uid : str
        The run's start uid.
    any_exit_status : bool
        Accept a stop that is not ``success`` (a failed run of a joined map, whose
        completed lines count): the run must still be stored whole.

    Returns
    -------
    str or None
        E.g. ``"stream 'primary' holds 0 of 2401 events"``; None for a complete run.
        Transport errors (a server down) propagate: they say nothing about the run.
    """
    try:
        run = runs[uid]
    except KeyError:
        return "is not in Tiled"
    stop = run.metadata.get("stop")
    if not stop:
        return "has no stop document in Tiled"
    if stop.get("exit_status") != "success" and not any_exit_status:
        return f"stopped with exit_status {stop.get('exit_status')!r}"
    streams = set(run)
    for stream, expected in sorted((stop.get("num_events") or {}).items()):
        stored = _stored_events(run, stream) if stream in streams else 0
        if stored != expected:
            return f"stream {stream!r} holds {stored} of {expected} events"
    return None


def _stored_events(run: Any, stream: str) -> int:
    """Events stored in one stream: the length of its first column."""
    for _, column in run[stream].items():
        shape = column.structure().shape
        return int(shape[0]) if shape else 0
    return 0
