"""Read the frames a run announces through ``stream_resource`` / ``stream_datum`` documents.

Frames are never inside events: a stream-asset detector emits one ``stream_resource`` per
file (its ``uri``, the dataset in ``parameters["dataset"]``, the ``data_key``) and then
``stream_datum`` documents naming the new rows (``indices``, rows in the file) and the events
they become (``seq_nums``, 1-based, stop exclusive). :class:`FrameReader` follows both and
returns the new rows as numpy arrays:

- from the HDF5 file directly when it is readable here (the Dectris master file's virtual
  dataset, or any plain dataset), opened read-only in SWMR mode for every batch, so rows the
  writer has flushed are seen; a batch not yet visible (the writer has not flushed, the master
  is being relinked) is retried a few times before it is an error;
- from the data files behind a Dectris master's per-file links when the resource names them
  (mimetype ``application/x-hdf5;layout=dectris-links``, parameters ``link_template``,
  ``first_link``, ``frames_per_file``: what a real DCU's file writer writes, see
  :class:`FileLinks`): row ``i`` of the resource is row ``i % frames_per_file`` of link
  ``i // frames_per_file + first_link``. A data file is opened only once it exists, and
  read only once it holds every announced frame (its chunks written), else retried;
- through Tiled when the files are not local: ``run[stream][data_key][seq_start - 1 : seq_stop
  - 1]`` of the run node the reader was given.

Shapes follow ophyd-async's convention: a data key's descriptor shape starts with the
collections per event, ``[1, H, W]`` for one frame per event (``[1]`` for a per-frame
scalar), while the files hold ``(N, H, W)``; Tiled registers ``(N, 1, H, W)`` until the run
is validated. Whatever the source, a batch holds one row per frame, ``(n, H, W)`` or
``(n,)`` (`per_frame_shape`). Keys of older runs declared ``[H, W]`` and read the same.

Examples
--------
::

    reader = FrameReader()
    for name, doc in documents:
        batch = reader(name, doc)
        if batch is not None and batch.data_key == "eiger":
            frames = batch.values  # (n, H, W)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle-LZ4 filter for h5py)
import numpy as np

__all__ = [
    "DatumRows",
    "FileLinks",
    "FrameBatch",
    "FrameReadError",
    "FrameReader",
    "local_path",
    "per_frame_shape",
]

logger = logging.getLogger(__name__)

#: Dataset of a resource that names none (the Dectris master's frames).
DEFAULT_DATASET = "/entry/data/data"


def per_frame_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of one frame from a data key's descriptor shape: a leading 1 is dropped.

    ophyd-async declares ``[collections_per_event, *frame]``; with one collection per
    event, the frame is what follows. A shape without a leading 1 (an older run's ``[H, W]``)
    is the frame shape already.

    Examples
    --------
    >>> per_frame_shape([1, 541, 517]), per_frame_shape([541, 517]), per_frame_shape([1])
    ((541, 517), (541, 517), ())
    """
    shape = tuple(int(n) for n in shape)
    return shape[1:] if shape[:1] == (1,) else shape


def _one_row_per_frame(values: np.ndarray, declared: tuple[int, ...] | None) -> np.ndarray:
    """``values`` as ``(n, *frame)`` when they carry the declared leading 1 (Tiled's rows)."""
    if declared is None or values.shape[1:] != declared or declared[:1] != (1,):
        return values
    return values.reshape(len(values), *declared[1:])


class FrameReadError(RuntimeError):
    """Announced rows could not be read (missing file, truncated dataset, corrupt data)."""


@dataclass(frozen=True)
class FileLinks:
    """Frames of a Dectris master that sit behind its per-file external links.

    Row ``i`` of the resource is row ``i % frames_per_file`` of the master's link
    ``link_template.format(i // frames_per_file + first_link)`` (an external link to a data
    file's ``/entry/data/data``). These are the ``stream_resource`` parameters of
    ``opmap.devices.SimplonEiger`` (``dectris_links_parameters``).

    Attributes
    ----------
    link_template : str
        Path of link ``n`` in the master, ``"/entry/data/data_{:06d}"``.
    first_link : int
        Number of the first link (1 for the Dectris file writer).
    frames_per_file : int
        Frames in every data file but the last (the file writer's ``nimages_per_file``).

    Examples
    --------
    >>> links = FileLinks("/entry/data/data_{:06d}", 1, 4)
    >>> for piece in links.pieces(2, 9):
    ...     print(piece)
    ('/entry/data/data_000001', 2, 4)
    ('/entry/data/data_000002', 0, 4)
    ('/entry/data/data_000003', 0, 1)
    """

    link_template: str
    first_link: int
    frames_per_file: int

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> FileLinks | None:
        """The links a resource's ``parameters`` name, or None (a plain dataset).

        Raises
        ------
        ValueError
            ``link_template`` is given but ``frames_per_file`` is not an integer >= 1 or
            ``first_link`` not an integer >= 0 (the message names the parameter).
        """
        template = parameters.get("link_template")
        if template is None:
            return None
        return cls(
            str(template),
            first_link=_int_parameter(parameters, "first_link", 1, least=0),
            frames_per_file=_int_parameter(parameters, "frames_per_file", None, least=1),
        )

    def pieces(self, start: int, stop: int) -> list[tuple[str, int, int]]:
        """``(link, first row, stop row)`` per data file covering resource rows ``start:stop``.

        An empty range gives one empty piece of the file that would hold row ``start``.
        """
        number, lo = divmod(start, self.frames_per_file)
        pieces = [] if stop > start else [(self.link(number), lo, lo)]
        row = start
        while row < stop:
            number, lo = divmod(row, self.frames_per_file)
            hi = min(self.frames_per_file, lo + stop - row)
            pieces.append((self.link(number), lo, hi))
            row += hi - lo
        return pieces

    def link(self, index: int) -> str:
        """Path in the master of the link to data file ``index`` (0-based)."""
        return self.link_template.format(index + self.first_link)


def _int_parameter(parameters: Mapping[str, Any], name: str, default: Any, least: int) -> int:
    value = parameters.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(
            f"stream_resource parameter {name}={value!r} must be an integer >= {least}"
        )
    return value


@dataclass(frozen=True)
class DatumRows:
    """Where the rows one ``stream_datum`` announces lie, checked but not read yet.

    Attributes
    ----------
    data_key : str
        Descriptor data key of its ``stream_resource`` (e.g. ``"eiger"``, ``"eiger-time_s"``).
    stream : str
        Event stream of the datum's descriptor (``"primary"``), or ``""`` if unknown.
    uri : str
        The resource's file (``file://localhost/...``).
    dataset : str or None
        HDF5 dataset in that file (``parameters["dataset"]``, default the Dectris frames);
        None when the frames sit behind the master's per-file links (``links``).
    rows : tuple of int
        ``(start, stop)`` rows of the dataset (of the links, in order), stop exclusive.
    seq : tuple of int
        ``(start, stop)`` sequence numbers (1-based, stop exclusive) of the same rows.
    links : FileLinks or None
        How rows map to the data files of a Dectris master, or None for a plain dataset.
    series_id : int or None
        The DCU's series number of the resource (``parameters["series_id"]``, a SIMPLON
        Eiger's): row ``i`` is image ``i`` of that series in the detector's stream v2.
    declared_shape : tuple of int or None
        The data key's shape in its descriptor (``(1, H, W)``), None if not seen.
    """

    data_key: str
    stream: str
    uri: str
    dataset: str | None
    rows: tuple[int, int]
    seq: tuple[int, int]
    links: FileLinks | None = None
    series_id: int | None = None
    declared_shape: tuple[int, ...] | None = None

    @property
    def frame_indices(self) -> np.ndarray:
        """0-based index of each row in its stream, int64 ``(n,)``."""
        return np.arange(self.seq[0] - 1, self.seq[1] - 1, dtype=np.int64)


@dataclass(frozen=True)
class FrameBatch:
    """Rows of one data key announced by one ``stream_datum``.

    Attributes
    ----------
    data_key : str
        Descriptor data key (e.g. the detector name, or ``"<det>-time_s"``).
    stream : str
        Event stream the rows belong to (``"primary"``), or ``""`` if unknown.
    seq_start : int
        Sequence number (1-based) of the first row; row ``i`` is event ``seq_start + i``.
    values : numpy.ndarray
        One row per frame (uint32 frames ``(n, H, W)``, float64 scalars ``(n,)``), the
        declared leading 1 dropped (see the module notes).
    """

    data_key: str
    stream: str
    seq_start: int
    values: np.ndarray

    @property
    def frame_indices(self) -> np.ndarray:
        """0-based index of each row in its stream, int64 ``(n,)``."""
        return np.arange(len(self.values), dtype=np.int64) + (self.seq_start - 1)


def local_path(uri: str, root_map: Mapping[str, str] | None = None) -> Path:
    """File system path of a ``file://`` resource URI, with an optional prefix translation.

    Parameters
    ----------
    uri : str
        ``file://localhost/abs/path/file.h5`` (or ``file:///abs/...``).
    root_map : mapping of str to str, optional
        ``{"/prefix/at/acquisition": "/prefix/here"}``: the first matching prefix is replaced.

    Examples
    --------
    >>> str(local_path("file://localhost/data/run_master.h5", {"/data": "/mnt/beamline"}))
    '/mnt/beamline/run_master.h5'
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise ValueError(f"uri={uri!r}: only file:// resources are read directly")
    path = unquote(parsed.path)
    for old, new in (root_map or {}).items():
        if path == old or path.startswith(old.rstrip("/") + "/"):
            path = new.rstrip("/") + path[len(old.rstrip("/")) :]
            break
    return Path(path)


class FrameReader:
    """Follow ``stream_resource`` / ``stream_datum`` documents and read the announced rows.

    Call it with every document of a run (``reader(name, doc)``); it returns a
    :class:`FrameBatch` for each ``stream_datum`` of a wanted key, else ``None``.

    Parameters
    ----------
    data_keys : collection of str, optional
        Keys to read; default every key with a stream resource.
    tiled_run : tiled client node, optional
        The run in Tiled (``catalog[uid]``). Used when the file of a resource is not
        readable here, or always when ``prefer_tiled`` is set.
    root_map : mapping of str to str, optional
        Prefix translation of file paths (see :func:`local_path`).
    prefer_tiled : bool
        Read through Tiled even when the file is local.
    retries : int
        Extra attempts (>= 0) when announced rows are not readable yet.
    retry_delay_s : float
        Wait between attempts, s (> 0); the total wait is ``retries * retry_delay_s``.
    """

    def __init__(
        self,
        *,
        data_keys: set[str] | frozenset[str] | None = None,
        tiled_run: Any = None,
        root_map: Mapping[str, str] | None = None,
        prefer_tiled: bool = False,
        retries: int = 20,
        retry_delay_s: float = 0.05,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        if not retry_delay_s > 0:
            raise ValueError(f"retry_delay_s={retry_delay_s} must be > 0 s")
        if prefer_tiled and tiled_run is None:
            raise ValueError("prefer_tiled=True needs a tiled_run")
        self.data_keys = None if data_keys is None else frozenset(data_keys)
        self.tiled_run = tiled_run
        self.root_map = dict(root_map or {})
        self.prefer_tiled = prefer_tiled
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self._resources: dict[str, dict[str, Any]] = {}
        self._streams: dict[str, str] = {}  # descriptor uid -> stream name
        self._shapes: dict[str, dict[str, tuple[int, ...]]] = {}  # descriptor uid -> shapes

    def __call__(self, name: str, doc: Mapping[str, Any]) -> FrameBatch | None:
        """Consume one document; return the rows a ``stream_datum`` announces."""
        if name == "descriptor":
            self._streams[doc["uid"]] = doc.get("name", "")
            self._shapes[doc["uid"]] = {
                key: tuple(int(n) for n in data_key.get("shape") or ())
                for key, data_key in doc.get("data_keys", {}).items()
            }
        elif name == "stream_resource":
            if self.data_keys is None or doc["data_key"] in self.data_keys:
                self._resources[doc["uid"]] = dict(doc)
        elif name == "stream_datum":
            return self.read_datum(doc)
        return None

    def read_datum(self, datum: Mapping[str, Any]) -> FrameBatch | None:
        """Rows of one ``stream_datum`` (``None`` if its resource is not followed)."""
        rows = self.locate(datum)
        return None if rows is None else self.read(rows)

    def locate(self, datum: Mapping[str, Any]) -> DatumRows | None:
        """Where the rows of one ``stream_datum`` lie (``None`` if its resource is not followed).

        Raises
        ------
        FrameReadError
            The datum's ``indices`` and ``seq_nums`` disagree in length, or are not ranges
            (negative rows, sequence numbers below 1, stop before start).
        """
        resource = self._resources.get(datum["stream_resource"])
        if resource is None:
            return None
        rows = (int(datum["indices"]["start"]), int(datum["indices"]["stop"]))
        seq = (int(datum["seq_nums"]["start"]), int(datum["seq_nums"]["stop"]))
        if rows[1] - rows[0] != seq[1] - seq[0]:
            raise FrameReadError(f"stream_datum {datum['uid']}: indices {rows} != seq_nums {seq}")
        if not (0 <= rows[0] <= rows[1] and seq[0] >= 1):
            raise FrameReadError(f"stream_datum {datum['uid']}: rows {rows}, seq_nums {seq}")
        stream = self._streams.get(datum.get("descriptor", ""), "")
        parameters = resource.get("parameters", {})
        try:
            links = FileLinks.from_parameters(parameters)
        except ValueError as error:
            raise FrameReadError(f"stream_resource {resource['uid']}: {error}") from error
        dataset = None if links else parameters.get("dataset", DEFAULT_DATASET)
        series_id = parameters.get("series_id")
        if series_id is not None and type(series_id) is not int:
            raise FrameReadError(
                f"stream_resource {resource['uid']}: parameter series_id={series_id!r} "
                "is not an int"
            )
        declared = self._shapes.get(datum.get("descriptor", ""), {}).get(resource["data_key"])
        return DatumRows(
            resource["data_key"],
            stream,
            resource["uri"],
            dataset,
            rows,
            seq,
            links,
            series_id,
            declared,
        )

    def read(self, rows: DatumRows) -> FrameBatch:
        """Read located rows: from the file when readable here, else through Tiled.

        Raises
        ------
        FrameReadError
            The rows stay unreadable after ``retries`` attempts, or the file is not
            readable here and no ``tiled_run`` was given.
        """
        path = None if self.prefer_tiled else self._readable_path(rows.uri)
        if path is not None and rows.links is not None:
            links = rows.links
            values = self._retry(
                lambda: _read_linked_rows(path, links, *rows.rows),
                f"{path} (links {links.link_template})",
            )
        elif path is not None:
            dataset = rows.dataset or DEFAULT_DATASET
            values = self._retry(
                lambda: _read_rows(path, dataset, *rows.rows), f"{path}:{dataset}"
            )
        elif self.tiled_run is None:
            raise FrameReadError(
                f"resource {rows.uri!r} is not readable here and no tiled_run was given"
            )
        else:
            values = self._retry(
                lambda: _read_tiled(self.tiled_run, rows.stream, rows.data_key, *rows.seq),
                f"tiled {rows.stream}/{rows.data_key}",
            )
        values = _one_row_per_frame(values, rows.declared_shape)
        return FrameBatch(rows.data_key, rows.stream, rows.seq[0], values)

    def _readable_path(self, uri: str) -> Path | None:
        try:
            path = local_path(uri, self.root_map)
        except ValueError:
            return None
        return path if path.parent.is_dir() else None

    def _retry(self, read: Callable[[], np.ndarray], what: str) -> np.ndarray:
        for attempt in range(self.retries + 1):
            try:
                return read()
            except (OSError, KeyError, _NotYetWrittenError) as error:
                if attempt == self.retries:
                    raise FrameReadError(
                        f"{what}: announced rows unreadable after {attempt + 1} attempts: {error}"
                    ) from error
                logger.debug("%s not readable yet (%s); retrying", what, error)
                time.sleep(self.retry_delay_s)
        raise AssertionError("unreachable")


class _NotYetWrittenError(Exception):
    """The dataset is shorter than the announced rows (the writer has not flushed yet)."""


def _read_rows(path: Path, dataset: str, start: int, stop: int) -> np.ndarray:
    # A fresh SWMR open per batch sees every row the writer has flushed, including rows of a
    # data file that is still open behind the master's virtual dataset.
    with h5py.File(path, "r", swmr=True) as f:
        node = f[dataset]
        if node.shape[0] < stop:
            raise _NotYetWrittenError(
                f"{dataset} has {node.shape[0]} rows, rows up to {stop} announced"
            )
        return np.asarray(node[start:stop])


def _read_linked_rows(master: Path, links: FileLinks, start: int, stop: int) -> np.ndarray:
    # The Dectris file writer writes no SWMR: a data file is read once it exists and holds
    # every announced frame (chunks written); until then the reader retries.
    with h5py.File(master, "r") as f:
        targets = [
            (*_link_target(f, master, link), lo, hi) for link, lo, hi in links.pieces(start, stop)
        ]
    blocks = [_read_data_file(path, dataset, lo, hi) for path, dataset, lo, hi in targets]
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _link_target(master: h5py.File, path: Path, link: str) -> tuple[Path, str]:
    """(data file, dataset) a master's link points at; the master itself for a plain dataset."""
    found = master.get(link, getlink=True)
    if found is None:
        raise _NotYetWrittenError(f"{path.name} has no link {link}")
    if isinstance(found, h5py.ExternalLink):
        target = Path(found.filename)
        return (target if target.is_absolute() else path.parent / target), found.path
    return path, link


def _read_data_file(path: Path, dataset: str, start: int, stop: int) -> np.ndarray:
    if not path.is_file():
        raise _NotYetWrittenError(f"data file {path} does not exist")
    with h5py.File(path, "r") as f:
        node = f[dataset]
        if node.shape[0] < stop:
            raise _NotYetWrittenError(
                f"data file {path} holds {node.shape[0]} frames, frames up to {stop} announced"
            )
        if node.chunks is not None:
            for row in range(start - start % node.chunks[0], stop, node.chunks[0]):
                if node.id.get_chunk_info_by_coord((row,) + (0,) * (node.ndim - 1)).size == 0:
                    raise _NotYetWrittenError(f"data file {path}: frame {row} not written yet")
        return np.asarray(node[start:stop])


def _read_tiled(run: Any, stream: str, key: str, seq_start: int, seq_stop: int) -> np.ndarray:
    node = run[stream][key]
    if node.shape[0] < seq_stop - 1:
        raise _NotYetWrittenError(f"{stream}/{key} has {node.shape[0]} rows in Tiled")
    return np.asarray(node[seq_start - 1 : seq_stop - 1])
