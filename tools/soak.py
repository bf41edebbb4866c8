"""Soak an accelerated rehearsal: RSS growth and open file descriptors over a long experiment.

Issue 13 §9: "a 24-hour-equivalent accelerated experiment keeps RSS growth under 5 % and open
file descriptors flat". This tool starts ``opmap rehearse`` (``python -m opmap.cli rehearse``)
on a fresh data directory, on the event-driven clock, with small maps and a time scale that
stretches the paper's protocol (4.6 h of experiment time at time scale 1 with the twin's
default cell: the discharge ends at its 3.0 V cut-off) to at least 24 h. Every few seconds it
samples, with psutil, the resident set size (RSS), the open file descriptors and the threads
of the rehearsal process and of its Tiled server child (the python running
``opmap.service._run``), and the map count reached (from the rehearsal's progress lines,
``... map 12/? ...``).

Figures: per process, RSS at the end of a warm-up (the first sample once map
``max(10, ceil(maps / 10))`` is done; half the maps for runs of fewer than 20) and at the
last map (the first sample once the last map is done), the growth in %; for information the
RSS before the rehearsal's summary (after the protocol's tail and the live analysis catching
up; the final report is not counted) and the peak; the fd min/max after the warm-up, to the
summary. Criteria: RSS growth to the last map < 5 % and fds flat, for both processes, and
the Tiled server alive (one process) to the summary. Flat means no climb: the median of the
last tenth of the samples after the warm-up is at most 1 above the first tenth's, and no
sample exceeds the first tenth's highest by more than a slack (4 by default). A spread alone
is not a leak: while maps are taken, detector files and HTTP connections come and go (a
scatter of ~5), and fewer are open once acquisition ends; a leak climbs.

The rehearsal's output goes to ``rehearse.log`` in the data directory (its tail is printed
when it fails). The figures go to ``--out`` as JSON (also every minute while running, and on
SIGINT/SIGTERM, which stop the rehearsal and keep the figures so far).

Exit status: 0 all criteria met; 1 a criterion failed (figures written); 2 the rehearsal
failed; 3 interrupted (partial figures written).

    python tools/soak.py [--out build/soak-24h.json]               # the 24 h soak (make soak-24h)
    python tools/soak.py --maps 6 --time-scale 0.01 --interval-s 30  # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

#: Time scale stretching the paper's protocol to >= 24 h of experiment time (24.4 h with the
#: twin's default cell; 7.3 gives 23.8 h).
DEFAULT_TIME_SCALE = 7.5
#: Protocol time between map starts (s, not scaled): ~122 maps over 24.4 h.
DEFAULT_INTERVAL_S = 720.0
#: Largest RSS growth allowed from the end of the warm-up to the end (%).
RSS_GROWTH_LIMIT_PCT = 5.0
#: Most fds a sample may exceed the first tenth's highest count by (after the warm-up).
DEFAULT_FD_SLACK = 4
#: Most the median fd count of the last tenth may exceed the first tenth's (a climb).
FD_CLIMB_LIMIT = 1
#: A command-line marker of the Tiled server child process.
SERVER_MARKER = "opmap.service._run"
#: The rehearsal's progress line: ``t = 1:02:03  step: ...  map 12/?  line 8/8``.
PROGRESS = re.compile(r"^t = (\d+):(\d\d):(\d\d)\s.*\bmap (\d+)/\S+")
#: The rehearsal's summary starts with this line: the experiment (and its analysis) is over.
FINISHED = "rehearsal finished in"
#: Exit statuses.
EXIT_PASS, EXIT_CRITERION, EXIT_REHEARSAL, EXIT_INTERRUPTED = 0, 1, 2, 3
#: Lines of the rehearsal's log printed when it fails.
TAIL_LINES = 60
#: Signals that stop the soak with the figures so far.
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds to wait for the server to exit (and unlock its table store) after the rehearsal.
SERVER_EXIT_S = 30.0
#: Seconds between two partial writes of the JSON figures.
PARTIAL_WRITE_S = 60.0


@dataclass
class ProcessSample:
    """One psutil reading of one process.

    Attributes
    ----------
    pid : int
        The process.
    rss_mb : float
        Resident set size (MiB).
    fds : int
        Open file descriptors.
    threads : int
        Threads.
    rss_anon_mb : float or None
        Anonymous resident memory (MiB, ``RssAnon`` of ``/proc/<pid>/status``): the heap of
        Python and of the native libraries (DuckDB's buffers); None where not readable.
    rss_file_mb : float or None
        File-backed resident memory (MiB, ``RssFile``: shared libraries, mapped files).
    """

    pid: int
    rss_mb: float
    fds: int
    threads: int
    rss_anon_mb: float | None = None
    rss_file_mb: float | None = None


@dataclass
class Sample:
    """Both processes at one time, with the progress of the experiment.

    Attributes
    ----------
    wall_s : float
        Seconds since the rehearsal started.
    maps : int
        Maps completed so far.
    finished : bool
        Whether the rehearsal had printed its summary (the experiment is over).
    processes : dict of str to ProcessSample
        ``"rehearsal"`` and ``"server"``, when alive.
    table_store_mb : dict of str to float
        Size on disk (MiB) of the server's DuckDB table store, ``"db"`` (``tables.duckdb``)
        and ``"wal"`` (its write-ahead log), when the soak knows where it is.
    """

    wall_s: float
    maps: int
    finished: bool
    processes: dict[str, ProcessSample] = field(default_factory=dict)
    table_store_mb: dict[str, float] = field(default_factory=dict)


class Progress:
    """Copy the rehearsal's output to a log file, following its progress lines.

    Parameters
    ----------
    log
        Where every line goes (flushed per line).
    """

    def __init__(self, log: IO[str]) -> None:
        self.log = log
        self.maps = 0
        self.experiment_time_s = 0.0
        self.finished = False
        #: Log records of the rehearsal by level: a soak whose server failed writes is no soak.
        self.log_records = {"WARNING": 0, "ERROR": 0}
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()

    def feed(self, line: str) -> None:
        """Log one line of output and note the map count and experiment time it gives."""
        self.log.write(line)
        self.log.flush()
        text = line.strip()
        with self._lock:
            self.tail.append(line.rstrip("\n"))
            match = PROGRESS.match(text)
            if match:
                hours, minutes, seconds, shown = (int(g) for g in match.groups())
                self.maps = max(self.maps, shown)
                self.experiment_time_s = max(
                    self.experiment_time_s, 3600.0 * hours + 60.0 * minutes + seconds
                )
            elif text.startswith(FINISHED):
                self.finished = True
            for level in self.log_records:
                if f" {level} " in text:
                    self.log_records[level] += 1

    def follow(self, stream: IO[str]) -> None:
        """Feed every line of ``stream`` until it closes (run in a thread)."""
        for line in stream:
            self.feed(line)

    def state(self) -> tuple[int, bool]:
        """Maps completed and whether the summary was printed."""
        with self._lock:
            return self.maps, self.finished


def read_process(process: psutil.Process) -> ProcessSample | None:
    """RSS, fds and threads of ``process``; None once it has exited.

    Parameters
    ----------
    process
        The process to read.

    Returns
    -------
    ProcessSample or None
        None when the process is gone (or a zombie).
    """
    try:
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet waited for
                return None
            reading = ProcessSample(
                pid=process.pid,
                rss_mb=process.memory_info().rss / 2**20,
                fds=process.num_fds(),
                threads=process.num_threads(),
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    status = read_rss_kinds(process.pid)
    reading.rss_anon_mb = status.get("RssAnon")
    reading.rss_file_mb = status.get("RssFile")
    return reading


def read_rss_kinds(pid: int) -> dict[str, float]:
    """``RssAnon``, ``RssFile`` and ``RssShmem`` of a process (MiB), from ``/proc/<pid>/status``.

    Parameters
    ----------
    pid
        The process.

    Returns
    -------
    dict of str to float
        Empty when the file is not there (not Linux) or the process has exited.
    """
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # not Linux, or exited since the psutil reading: no split, not an error
        return {}
    kinds = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            kinds[key] = int(value.split()[0]) / 1024.0  # kB
    return kinds


def table_store_sizes(path: Path | None) -> dict[str, float]:
    """Sizes on disk (MiB) of a DuckDB database file and of its write-ahead log.

    Parameters
    ----------
    path
        The database file (``tables.duckdb``); None: nothing to read.

    Returns
    -------
    dict of str to float
        ``"db"`` and ``"wal"`` for the files that exist.
    """
    if path is None:
        return {}
    sizes = {}
    for key, file in (("db", path), ("wal", path.with_name(path.name + ".wal"))):
        with contextlib.suppress(FileNotFoundError):  # not created yet / checkpointed away
            sizes[key] = round(file.stat().st_size / 2**20, 2)
    return sizes


def find_child(parent: psutil.Process, marker: str) -> psutil.Process | None:
    """The first descendant of ``parent`` with ``marker`` in its command line, or None.

    Parameters
    ----------
    parent
        Where to look from.
    marker
        A word of the child's command line (e.g. `SERVER_MARKER`).

    Returns
    -------
    psutil.Process or None
        None when no (live) descendant carries the marker.
    """
    try:
        children = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if any(marker in part for part in child.cmdline()):
                return child
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # exited between the listing and the reading: not the live one
    return None


class Sampler:
    """Samples a process and its marked child until stopped.

    Parameters
    ----------
    pid
        The main process (the rehearsal).
    child_marker
        Command-line marker of the child to follow (the Tiled server).
    progress
        Gives the map count; None counts 0 maps.
    table_store
        The server's DuckDB database file, whose size (and its WAL's) each sample notes;
        None: not sampled.
    """

    def __init__(
        self,
        pid: int,
        child_marker: str,
        progress: Progress | None = None,
        table_store: Path | None = None,
    ) -> None:
        self.main = psutil.Process(pid)
        self.table_store = table_store
        self.child_marker = child_marker
        self.progress = progress
        self.child: psutil.Process | None = None
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()

    def sample(self) -> Sample:
        """Take one sample of both processes (and remember it)."""
        maps, finished = self.progress.state() if self.progress else (0, False)
        sample = Sample(time.monotonic() - self.t0, maps, finished)
        sample.table_store_mb = table_store_sizes(self.table_store)
        main = read_process(self.main)
        if main is not None:
            sample.processes["rehearsal"] = main
        child = read_process(self.child) if self.child is not None else None
        if child is None and main is not None:  # not started yet, or replaced
            self.child = find_child(self.main, self.child_marker)
            child = read_process(self.child) if self.child is not None else None
        if child is not None:
            sample.processes["server"] = child
        self.samples.append(sample)
        return sample

    def run(self, interval_s: float, stop: threading.Event, on_sample: Any = None) -> None:
        """Sample every ``interval_s`` seconds until ``stop`` is set or the main process ends.

        Parameters
        ----------
        interval_s
            Seconds between samples.
        stop
            Set to stop sampling.
        on_sample
            Called with the sampler after each sample (e.g. to write partial figures).
        """
        while not stop.is_set():
            sample = self.sample()
            if on_sample is not None:
                on_sample(self)
            if "rehearsal" not in sample.processes:
                return
            stop.wait(interval_s)


def warmup_map(n_maps: int) -> int:
    """The map after which the warm-up ends: map max(10, ceil(10 %)), at most half the run.

    Parameters
    ----------
    n_maps
        Maps of the run.

    Returns
    -------
    int
        At least 1 (0 when there was no map).
    """
    if n_maps <= 0:
        return 0
    return min(max(10, math.ceil(n_maps / 10)), max(1, n_maps // 2))


def process_figures(
    steady: list[Sample], after_warmup: list[Sample], name: str
) -> dict[str, Any] | None:
    """RSS at the warm-up's end and at the last map, growth, fd and thread spread of a process.

    Parameters
    ----------
    steady
        The samples from the end of the warm-up to the first one after the last map: the RSS
        growth is measured over them.
    after_warmup
        Every sample from the end of the warm-up to the end of the experiment (the tail of
        the protocol and the analysis catching up included): fds, threads, peak and final RSS.
    name
        ``"rehearsal"`` or ``"server"``.

    Returns
    -------
    dict or None
        None when no sample of the process falls in ``steady``.
    """
    readings = [s.processes[name] for s in steady if name in s.processes]
    every = [s.processes[name] for s in after_warmup if name in s.processes]
    if not readings:
        return None
    first, last, final = readings[0], readings[-1], every[-1]
    fds = [r.fds for r in every]
    tenth = max(1, len(fds) // 10)
    return _anon_figures(first, last, every) | {
        "pids": sorted({r.pid for r in every}),
        "samples": len(every),
        "rss_warmup_mb": round(first.rss_mb, 1),
        "rss_end_mb": round(last.rss_mb, 1),
        "rss_growth_pct": round(100.0 * (last.rss_mb / first.rss_mb - 1.0), 2),
        "rss_final_mb": round(final.rss_mb, 1),
        "rss_final_growth_pct": round(100.0 * (final.rss_mb / first.rss_mb - 1.0), 2),
        "rss_max_mb": round(max(r.rss_mb for r in every), 1),
        "fds_warmup": first.fds,
        "fds_end": final.fds,
        "fds_min": min(fds),
        "fds_max": max(fds),
        # a trend, not a spread: a leak moves the median, open connections only scatter
        "fds_median_first_tenth": statistics.median(fds[:tenth]),
        "fds_median_last_tenth": statistics.median(fds[-tenth:]),
        "fds_max_first_tenth": max(fds[:tenth]),
        "threads_min": min(r.threads for r in every),
        "threads_max": max(r.threads for r in every),
    }


def _anon_figures(
    first: ProcessSample, last: ProcessSample, every: list[ProcessSample]
) -> dict[str, Any]:
    """Anonymous RSS at the warm-up's end and at the last map, its growth and peak (MiB).

    Empty when ``/proc`` gave no split (not Linux): the RSS figures stand alone.
    """
    if first.rss_anon_mb is None or last.rss_anon_mb is None:
        return {}
    anon = [r.rss_anon_mb for r in every if r.rss_anon_mb is not None]
    return {
        "rss_anon_warmup_mb": round(first.rss_anon_mb, 1),
        "rss_anon_end_mb": round(last.rss_anon_mb, 1),
        "rss_anon_growth_pct": round(100.0 * (last.rss_anon_mb / first.rss_anon_mb - 1.0), 2),
        "rss_anon_max_mb": round(max(anon), 1),
        "rss_file_warmup_mb": first.rss_file_mb,
        "rss_file_end_mb": last.rss_file_mb,
    }


def table_store_figures(steady: list[Sample], after_warmup: list[Sample]) -> dict[str, Any]:
    """The DuckDB table store on disk: database and WAL (MiB) at the warm-up, at the last
    map and their peaks after the warm-up (a WAL falling back is a checkpoint).

    Parameters
    ----------
    steady, after_warmup
        As in `process_figures`.

    Returns
    -------
    dict
        Empty when no sample noted the table store.
    """
    noted = [s.table_store_mb for s in steady if s.table_store_mb]
    every = [s.table_store_mb for s in after_warmup if s.table_store_mb]
    if not noted:
        return {}
    figures: dict[str, Any] = {}
    for key in ("db", "wal"):
        figures[f"{key}_warmup_mb"] = noted[0].get(key, 0.0)
        figures[f"{key}_end_mb"] = noted[-1].get(key, 0.0)
        figures[f"{key}_max_mb"] = max(sizes.get(key, 0.0) for sizes in every)
    return figures


def steady_window(samples: list[Sample], n_maps: int) -> tuple[list[Sample], list[Sample]]:
    """The samples of the RSS growth, and every sample after the warm-up (see `summarize`).

    Parameters
    ----------
    samples
        Every sample, in time order.
    n_maps
        Maps completed by the rehearsal.

    Returns
    -------
    steady, after_warmup : list of Sample
        From the first sample at or after the warm-up's map: up to the first sample after the
        last map, and up to the last sample before the rehearsal's summary.
    """
    warmup = warmup_map(n_maps)
    running = [s for s in samples if not s.finished] or samples
    after_warmup = [s for s in running if s.maps >= warmup] if warmup else []
    steady = []
    for sample in after_warmup:
        steady.append(sample)
        if sample.maps >= n_maps:
            break
    return steady, after_warmup


def server_lost(samples: list[Sample]) -> dict[str, Any] | None:
    """When the server child was first missing while the rehearsal still ran, or None.

    Parameters
    ----------
    samples
        Every sample, in time order.

    Returns
    -------
    dict or None
        ``map`` and ``wall_s`` of the first sample, before the rehearsal's summary, in which
        the rehearsal was alive but the server (seen before) was not; None if it never was.
    """
    seen = False
    for sample in samples:
        if sample.finished:
            break
        if "server" in sample.processes:
            seen = True
        elif seen and "rehearsal" in sample.processes:
            return {"map": sample.maps, "wall_s": round(sample.wall_s, 1)}
    return None


def fds_flat(figures: dict[str, Any], fd_slack: int) -> bool:
    """True when a process's fds did not climb after the warm-up (see the module docstring).

    Parameters
    ----------
    figures
        `process_figures` of the process.
    fd_slack
        Most fds any sample may exceed the first tenth's highest count by.
    """
    climb = figures["fds_median_last_tenth"] - figures["fds_median_first_tenth"]
    excursion = figures["fds_max"] - figures["fds_max_first_tenth"]
    return climb <= FD_CLIMB_LIMIT and excursion <= fd_slack


def summarize(
    samples: list[Sample], n_maps: int, *, fd_slack: int = DEFAULT_FD_SLACK
) -> dict[str, Any]:
    """The soak figures of ``samples`` and the pass/fail of each criterion.

    The RSS growth runs from the end of the warm-up (the first sample once map `warmup_map`
    is done) to the first sample after the last map; ``rss_final_*`` give the last sample
    before the rehearsal's summary (after the protocol's tail and the live analysis catching
    up), for information. The fds count over the whole time after the warm-up.

    Parameters
    ----------
    samples
        Every sample, in time order.
    n_maps
        Maps completed by the rehearsal.
    fd_slack
        Most fds any sample after the warm-up may exceed the first tenth's highest by.

    Returns
    -------
    dict
        ``warmup_map``, per process figures (`process_figures`) and ``criteria``.
    """
    steady, after_warmup = steady_window(samples, n_maps)
    processes = {
        name: process_figures(steady, after_warmup, name) for name in ("rehearsal", "server")
    }
    criteria: dict[str, Any] = {"rss_growth_limit_pct": RSS_GROWTH_LIMIT_PCT, "fd_slack": fd_slack}
    for name, figures in processes.items():
        if figures is None:  # no figures: the criterion cannot be met
            criteria[f"{name}_rss_ok"] = criteria[f"{name}_fds_ok"] = False
            continue
        criteria[f"{name}_rss_ok"] = figures["rss_growth_pct"] < RSS_GROWTH_LIMIT_PCT
        criteria[f"{name}_fds_ok"] = fds_flat(figures, fd_slack)
    lost = server_lost(samples)
    pids = {s.processes["server"].pid for s in samples if "server" in s.processes}
    criteria["server_alive_ok"] = lost is None and len(pids) == 1
    criteria["passed"] = all(v for k, v in criteria.items() if k.endswith("_ok"))
    return {
        "server_lost": lost,
        "table_store": table_store_figures(steady, after_warmup),
        "warmup_map": warmup_map(n_maps),
        "warmup_wall_s": round(steady[0].wall_s, 1) if steady else None,
        "end_wall_s": round(steady[-1].wall_s, 1) if steady else None,
        "final_wall_s": round(after_warmup[-1].wall_s, 1) if after_warmup else None,
        "processes": processes,
        "criteria": criteria,
    }


def format_table(report: dict[str, Any]) -> str:
    """The figures of ``report`` as a text table.

    Parameters
    ----------
    report
        What `build_report` returns.

    Returns
    -------
    str
        One row per process, then the run and the verdict.
    """
    head = (
        f"{'process':<10} {'RSS warm-up':>12} {'RSS end':>10} {'growth':>8} "
        f"{'RSS final':>10} {'growth':>8} {'RSS max':>10} {'fds min':>8} {'fds max':>8} "
        f"{'fds trend':>10}"
    )
    rows = [
        "RSS warm-up: at map {warmup_map}; RSS end: at the last map; RSS final: before the "
        "summary; fds trend: median of the first -> last tenth of the samples after the "
        "warm-up".format(warmup_map=report["warmup_map"]),
        head,
        "-" * len(head),
    ]
    for name, f in report["processes"].items():
        if f is None:
            rows.append(f"{name:<10} (no sample after the warm-up)")
            continue
        rows.append(
            f"{name:<10} {f['rss_warmup_mb']:>9.1f} MB {f['rss_end_mb']:>7.1f} MB "
            f"{f['rss_growth_pct']:>7.2f}% {f['rss_final_mb']:>7.1f} MB "
            f"{f['rss_final_growth_pct']:>7.2f}% {f['rss_max_mb']:>7.1f} MB "
            f"{f['fds_min']:>8d} {f['fds_max']:>8d} "
            f"{f['fds_median_first_tenth']:>4g} -> {f['fds_median_last_tenth']:<4g}"
        )
    rows += _detail_rows(report)
    c = report["criteria"]
    hours = report["experiment_time_s"] / 3600.0
    rows.append(
        f"maps {report['maps']} (warm-up to map {report['warmup_map']}), experiment time "
        f">= {hours:.2f} h at the last map, wall {report['wall_s'] / 60:.1f} min, "
        f"{report['n_samples']} samples"
    )
    verdict = "PASS" if c["passed"] else "FAIL"
    rows.append(
        f"{verdict}: RSS growth < {c['rss_growth_limit_pct']:g} % "
        f"(rehearsal {_ok(c['rehearsal_rss_ok'])}, server {_ok(c['server_rss_ok'])}); "
        f"fds flat (no climb > {FD_CLIMB_LIMIT}, peak <= first tenth's + {c['fd_slack']}) "
        f"(rehearsal {_ok(c['rehearsal_fds_ok'])}, server {_ok(c['server_fds_ok'])})"
    )
    records = report["rehearsal_log_records"]
    if any(records.values()):
        rows.append(
            f"the rehearsal logged {records['WARNING']} warning(s) and {records['ERROR']} "
            "error(s): see its log before trusting the figures"
        )
    if not c["server_alive_ok"]:
        lost = report["server_lost"] or {"map": "?", "wall_s": float("nan")}
        rows.append(
            f"FAIL: the Tiled server did not live through the experiment (missing from map "
            f"{lost['map']}, {lost['wall_s']:.0f} s); its figures stop there: see its log"
        )
    if report["interrupted"]:
        rows.append("INTERRUPTED: figures so far")
    return "\n".join(rows)


def _detail_rows(report: dict[str, Any]) -> list[str]:
    """Where the memory is: anonymous RSS per process, the table store on disk, DuckDB's view."""
    rows = []
    for name, f in report["processes"].items():
        if f is not None and "rss_anon_warmup_mb" in f:
            rows.append(
                f"{name:<10} anonymous RSS {f['rss_anon_warmup_mb']:.1f} -> "
                f"{f['rss_anon_end_mb']:.1f} MB ({f['rss_anon_growth_pct']:+.2f} %), "
                f"max {f['rss_anon_max_mb']:.1f} MB"
            )
    t = report.get("table_store") or {}
    if t:
        rows.append(
            f"tables.duckdb {t['db_warmup_mb']:.1f} -> {t['db_end_mb']:.1f} MB, its WAL "
            f"{t['wal_warmup_mb']:.1f} -> {t['wal_end_mb']:.1f} MB (max {t['wal_max_mb']:.1f})"
        )
    view = report.get("duckdb")
    if view is not None:
        rows.append(f"DuckDB after the run: {json.dumps(view, default=str)}")
    return rows


def _say(text: str) -> None:
    """Print ``text`` at once (the soak runs for hours, often under nohup)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _ok(flag: bool) -> str:
    return "ok" if flag else "FAILED"


def build_report(
    sampler: Sampler, progress: Progress, run: dict[str, Any], fd_slack: int
) -> dict[str, Any]:
    """Everything written to the JSON file: the run, the figures and every sample.

    Parameters
    ----------
    sampler
        Its samples so far.
    progress
        Maps and experiment time reached.
    run
        What was run: ``command``, ``data_dir``, ``log``, ``options``, ``returncode``,
        ``interrupted``.
    fd_slack
        See `summarize`.

    Returns
    -------
    dict
        JSON-ready.
    """
    maps, finished = progress.state()
    report = dict(run)
    report.update(
        maps=maps,
        experiment_time_s=progress.experiment_time_s,
        rehearsal_finished=finished,
        rehearsal_log_records=dict(progress.log_records),
        wall_s=round(time.monotonic() - sampler.t0, 1),
        n_samples=len(sampler.samples),
    )
    report.update(summarize(sampler.samples, maps, fd_slack=fd_slack))
    report["samples"] = [asdict(s) for s in sampler.samples]
    return report


def duckdb_view(path: Path | None) -> dict[str, Any] | None:
    """DuckDB's own account of the table store, read after the server has stopped.

    The running server's ``duckdb_memory()`` is not reachable from here without a route into
    the server (not wanted: attack surface); what the file says once the server let go of it
    is: ``pragma database_size`` (blocks used and free, WAL) and the rows of each table.

    Parameters
    ----------
    path
        ``tables.duckdb``; None or missing: nothing to read.

    Returns
    -------
    dict or None
        ``database_size`` (the pragma's row), ``tables`` (how many) and ``rows_estimated``
        (over all tables), or ``error`` when DuckDB could not open the file (e.g. still
        locked); None without a file.
    """
    if path is None or not path.exists():
        return None
    import duckdb  # the soak's interpreter is opmap's: DuckDB is there

    try:
        connection = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as error:  # reported in the figures, not hidden
        return {"error": f"{type(error).__name__}: {error}"}
    with contextlib.closing(connection):
        cursor = connection.execute("pragma database_size")
        names = [d[0] for d in cursor.description]
        size = dict(zip(names, cursor.fetchone(), strict=True))
        tables = connection.execute(
            "select schema_name, table_name, estimated_size from duckdb_tables()"
        ).fetchall()
    rows = sum(int(n) for _, _, n in tables)
    return {"database_size": size, "tables": len(tables), "rows_estimated": rows}


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_text(json.dumps(report, indent=1) + "\n")
    partial.replace(path)


def rehearse_command(args: argparse.Namespace, data_dir: Path) -> list[str]:
    """The ``opmap rehearse`` command line of the soak.

    Parameters
    ----------
    args
        The tool's options.
    data_dir
        The rehearsal's (fresh) data directory.

    Returns
    -------
    list of str
        Runs with this interpreter (``python -m opmap.cli rehearse ...``).
    """
    command = [sys.executable, "-m", "opmap.cli", "rehearse", "--data-dir", str(data_dir)]
    command += ["--map-shape", *(str(n) for n in args.map_shape)]
    command += ["--time-scale", repr(args.time_scale), "--map-interval-s", repr(args.interval_s)]
    command += ["--seed", str(args.seed)]
    if args.maps is not None:
        command += ["--max-maps", str(args.maps)]
    if args.no_live_analysis:
        command.append("--no-live-analysis")
    return command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The tool's options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/soak-24h.json"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="parent of the fresh data directory (default: the system's temp directory)",
    )
    parser.add_argument("--maps", type=int, default=None, help="stop after N maps")
    parser.add_argument("--map-shape", type=int, nargs=2, default=(8, 5), metavar=("NZ", "NX"))
    parser.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE)
    parser.add_argument(
        "--interval-s",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help="protocol time between map starts (s, not scaled)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-live-analysis",
        action="store_true",
        help="rehearse without the live analysis (to tell its memory from the writers')",
    )
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--fd-slack", type=int, default=DEFAULT_FD_SLACK)
    args = parser.parse_args(argv)
    if args.maps is not None and args.maps < 1:
        parser.error("--maps must be >= 1")
    if not args.sample_s > 0:
        parser.error("--sample-s must be > 0")
    return args


class _Interrupt:
    """SIGINT/SIGTERM handler: note the signal, stop the sampling and the rehearsal."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.process: subprocess.Popen[str] | None = None
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # its Tiled server follows it (parent-death signal)


def _start(
    command: list[str], log: IO[str]
) -> tuple[subprocess.Popen[str], Progress, threading.Thread]:
    """Start the rehearsal with its output followed (and logged) by a thread."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # progress lines as they come
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    progress = Progress(log)
    assert process.stdout is not None
    reader = threading.Thread(target=progress.follow, args=(process.stdout,), daemon=True)
    reader.start()
    return process, progress, reader


def _partial_writer(run: dict[str, Any], progress: Progress, args: argparse.Namespace) -> Any:
    """A sampler callback writing the figures so far every `PARTIAL_WRITE_S` seconds."""
    last = [time.monotonic()]

    def write(sampler: Sampler) -> None:
        if time.monotonic() - last[0] >= PARTIAL_WRITE_S:
            last[0] = time.monotonic()
            report = build_report(sampler, progress, run | {"partial": True}, args.fd_slack)
            write_json(report, args.out)

    return write


def _stop(process: subprocess.Popen[str], timeout_s: float = 60.0) -> int:
    """Terminate the rehearsal (then kill it after ``timeout_s``); its exit status."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the soak; see the module docstring for the exit statuses."""
    args = parse_args(argv)
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="opmap-soak-", dir=args.data_dir))
    data_dir = folder / "opmap-data"
    return soak(rehearse_command(args, data_dir), folder, args, data_dir / "tables.duckdb")


def soak(
    command: list[str], folder: Path, args: argparse.Namespace, table_store: Path | None = None
) -> int:
    """Run ``command``, sample it and its server child, write and print the figures.

    Parameters
    ----------
    command
        The rehearsal (`rehearse_command`); its first word (the interpreter) is left out of
        the figures.
    folder
        The soak's data directory: ``rehearse.log`` goes there.
    args
        The tool's options (`parse_args`): ``out``, ``sample_s``, ``fd_slack``.
    table_store
        The server's DuckDB table store (``tables.duckdb``): its size on disk is sampled and
        DuckDB's account of it read at the end; None: neither.

    Returns
    -------
    int
        The exit status (see the module docstring).
    """
    log_path = folder / "rehearse.log"
    run: dict[str, Any] = {
        "command": command[1:],  # without this machine's interpreter path
        "data_dir": str(folder),
        "log": str(log_path),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "returncode": None,
        "interrupted": False,
        "signal": None,
        "partial": False,
        "duckdb": None,
    }
    stop = threading.Event()
    interrupt = _Interrupt(stop)
    previous = {signum: signal.signal(signum, interrupt) for signum in _SIGNALS}
    _say(f"soak: {' '.join(command[1:])}\nsoak: output in {log_path}")
    try:
        with log_path.open("w") as log:
            process, progress, reader = _start(command, log)
            interrupt.process = process
            sampler = Sampler(process.pid, SERVER_MARKER, progress, table_store)
            try:
                sampler.run(args.sample_s, stop, _partial_writer(run, progress, args))
            finally:
                run["returncode"] = _stop(process) if stop.is_set() else process.wait()
                reader.join(timeout=60.0)  # the last lines (the summary) reach the log
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    run["interrupted"] = interrupt.signum is not None
    run["signal"] = interrupt.signum
    if sampler.child is not None:  # it lets go of the table store as it exits
        psutil.wait_procs([sampler.child], timeout=SERVER_EXIT_S)
    run["duckdb"] = duckdb_view(table_store)
    return _finish(sampler, progress, run, args)


def _finish(
    sampler: Sampler, progress: Progress, run: dict[str, Any], args: argparse.Namespace
) -> int:
    """Write and print the figures; the tool's exit status."""
    report = build_report(sampler, progress, run, args.fd_slack)
    write_json(report, args.out)
    _say(format_table(report))
    _say(f"soak: figures in {args.out}")
    if run["interrupted"]:
        _say(f"soak: interrupted by signal {run['signal']}; the figures are those so far")
        return EXIT_INTERRUPTED
    if run["returncode"] != 0:
        _say(f"soak: the rehearsal failed (exit status {run['returncode']}); its log ends:")
        _say("\n".join(progress.tail))
        return EXIT_REHEARSAL
    return EXIT_PASS if report["criteria"]["passed"] else EXIT_CRITERION


if __name__ == "__main__":
    sys.exit(main())
