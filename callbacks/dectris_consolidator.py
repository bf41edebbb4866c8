"""TiledWriter support for Dectris masters read through their per-file links.

A real Dectris file writer writes, per series (one ``arm``), ``<pattern>_master.h5`` whose
``/entry/data/data_000001``, ``…_000002`` are external links to
``<pattern>_data_000001.h5:/entry/data/data``, … of ``frames_per_file`` frames each (the
last one fewer), and no stacked ``/entry/data/data``. ``opmap.devices.SimplonEiger``
describes each series with a stream resource of mimetype
``application/x-hdf5;layout=dectris-links`` (parameters ``link_template``, ``first_link``,
``frames_per_file``, ``dataset_in_data_file``).

:class:`DectrisLinksConsolidator` turns those resources into one Tiled array node
``(N, H, W)`` per data key: every data file a ``stream_datum`` reaches becomes an HDF5 asset
(dataset ``/entry/data/data``) of the node's data source, read by Tiled's own HDF5 adapter
(mimetype ``application/x-hdf5``), which concatenates the files along the frame axis. The
next series' resource (TiledWriter routes it to `update_from_stream_resource`) appends its
data files after those of the previous one. The data files are named from the master by the
Dectris convention (``_master.h5`` → ``_data_NNNNNN.h5``, ``NNNNNN`` the link number); the
server must list their directory in its readable storage.

`register_dectris_consolidator` adds the consolidator to bluesky-tiled-plugins'
``CONSOLIDATOR_REGISTRY``; importing `opmap.callbacks.tiled_writer` or
`opmap.callbacks.spool` does it.

Examples
--------
::

    from bluesky_tiled_plugins import TiledWriter
    from opmap.callbacks.dectris_consolidator import register_dectris_consolidator

    register_dectris_consolidator()
    RE.subscribe(TiledWriter(client))  # SimplonEiger runs now register their frames
"""

from __future__ import annotations

from typing import Any

from bluesky_tiled_plugins.writing.consolidators import (
    CONSOLIDATOR_REGISTRY,
    ConsolidatorBase,
    Patch,
)
from event_model.documents import EventDescriptor, StreamDatum, StreamResource
from tiled.structures.data_source import Asset

from opmap.devices import DECTRIS_LINKS_MIMETYPE

from .frames import FileLinks

__all__ = [
    "DECTRIS_LINKS_MIMETYPE",
    "DectrisLinksConsolidator",
    "data_file_uri",
    "register_dectris_consolidator",
]

#: Mimetype of the data source it registers: Tiled's own HDF5 adapter reads the data files.
HDF5_MIMETYPE = "application/x-hdf5"
_MASTER_SUFFIX = "_master.h5"


def data_file_uri(master_uri: str, number: int) -> str:
    """URI of data file ``number`` (1-based link number) of a Dectris master.

    Raises
    ------
    ValueError
        ``master_uri`` does not end in ``_master.h5`` (not named as the file writer does).

    Examples
    --------
    >>> data_file_uri("file://localhost/data/map_0001_master.h5", 2)
    'file://localhost/data/map_0001_data_000002.h5'
    """
    if not master_uri.endswith(_MASTER_SUFFIX):
        raise ValueError(
            f"stream_resource uri={master_uri!r} must name a Dectris master '*{_MASTER_SUFFIX}'"
        )
    return f"{master_uri.removesuffix(_MASTER_SUFFIX)}_data_{number:06d}.h5"


class DectrisLinksConsolidator(ConsolidatorBase):
    """Consolidate the series of a Dectris Eiger into one Tiled array of frames.

    Each stream resource is one series (one master); its ``stream_datum`` rows are frames
    of that series, in order, starting at 0. Frame ``i`` of a series is row
    ``i % frames_per_file`` of data file ``i // frames_per_file + first_link``; each data
    file is registered once, when a datum first reaches it. Series are concatenated along
    the frame axis in the order their resources arrive.

    Parameters
    ----------
    stream_resource : StreamResource
        The first series' resource (mimetype `DECTRIS_LINKS_MIMETYPE`).
    descriptor : EventDescriptor
        The stream's descriptor (frame shape and dtype of the data key).

    Raises
    ------
    ValueError
        A resource without ``link_template`` or a positive integer ``frames_per_file``, a
        master not named ``*_master.h5``, or a datum whose rows do not follow the previous
        one.
    """

    supported_mimetypes = {DECTRIS_LINKS_MIMETYPE}  # noqa: RUF012  (as the base class has it)

    def __init__(self, stream_resource: StreamResource, descriptor: EventDescriptor) -> None:
        super().__init__(stream_resource, descriptor)
        self.mimetype = HDF5_MIMETYPE
        self.assets.clear()  # data files are added as datums reach them
        # the file writer's chunks: one frame each
        self.chunk_shape = tuple(stream_resource["parameters"].get("chunk_shape", ())) or (1,)
        self._dataset = _dataset(stream_resource)
        self._start_series(stream_resource)

    def _start_series(self, stream_resource: StreamResource) -> None:
        links = FileLinks.from_parameters(stream_resource["parameters"])
        if links is None:
            raise ValueError(
                f"stream_resource {stream_resource['uid']}: parameters name no link_template"
            )
        data_file_uri(stream_resource["uri"], links.first_link)  # checks the master's name
        self._master_uri, self._links = stream_resource["uri"], links
        self._series_rows = 0  # rows of this series announced so far
        self._series_files = 0  # data files of this series registered so far

    def consume_stream_datum(self, doc: StreamDatum) -> Patch:
        """Register the data files the datum's rows reach; grow the array by its rows."""
        start, stop = doc["indices"]["start"], doc["indices"]["stop"]
        if start != self._series_rows or stop < start:
            raise ValueError(
                f"stream_datum {doc['uid']}: indices {start}..{stop} must continue the series "
                f"{self._master_uri} at row {self._series_rows}"
            )
        files = -(-stop // self._links.frames_per_file)
        for index in range(self._series_files, files):
            uri = data_file_uri(self._master_uri, index + self._links.first_link)
            self.assets.append(
                Asset(
                    data_uri=uri,
                    is_directory=False,
                    parameter=self.default_asset_role,
                    num=len(self.assets),
                )
            )
        self._series_files = max(files, self._series_files)
        self._series_rows = stop
        return super().consume_stream_datum(doc)

    def update_from_stream_resource(self, stream_resource: StreamResource) -> None:
        """The next series: its frames follow those of the previous series."""
        if stream_resource["mimetype"] != DECTRIS_LINKS_MIMETYPE:
            raise ValueError(
                f"stream_resource {stream_resource['uid']}: mimetype "
                f"{stream_resource['mimetype']!r} cannot follow {DECTRIS_LINKS_MIMETYPE!r} "
                f"for data key {self.data_key!r}"
            )
        if _dataset(stream_resource) != self._dataset:
            raise ValueError(
                f"stream_resource {stream_resource['uid']}: every series must keep its frames "
                f"in {self._dataset!r}, got {_dataset(stream_resource)!r}"
            )
        self._sres_parameters = stream_resource["parameters"]
        self._start_series(stream_resource)

    def adapter_parameters(self) -> dict[str, Any]:
        """Parameters of Tiled's HDF5 adapter: the frames dataset in every data file."""
        return {
            "dataset": self._dataset,
            "swmr": bool(self._sres_parameters.get("swmr", False)),
            "locking": self._sres_parameters.get("locking"),
        }


def _dataset(stream_resource: StreamResource) -> str:
    return str(stream_resource["parameters"].get("dataset_in_data_file", "/entry/data/data"))


def register_dectris_consolidator() -> None:
    """Let bluesky-tiled-plugins' TiledWriter read `DECTRIS_LINKS_MIMETYPE` resources."""
    CONSOLIDATOR_REGISTRY[DECTRIS_LINKS_MIMETYPE] = DectrisLinksConsolidator
