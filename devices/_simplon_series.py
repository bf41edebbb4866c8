"""Series bookkeeping of a SIMPLON Eiger and the stream documents that describe its files.

Every ``arm`` of a Dectris detector starts a *series*, and its file writer writes one
``<name_pattern>_master.h5`` per series with per-file links ``/entry/data/data_000001`` ...
(see `opmap.devices._eiger_layout`). A staged detector may arm many times (a fly map arms
once per line), so it emits one stream resource per series, all for the same data key,
each covering the frames of its series.

Bluesky numbers the ``stream_datum`` documents of one ``collect`` by a single counter per
stream, so one collect must not carry two datums for one key. A collect that reaches past
the end of a series therefore announces the frames up to that end; the next collect
announces the rest. The map plans collect after each completed line (one series), so they
never hit this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bluesky.protocols import StreamAsset
from event_model import ComposeStreamResource, ComposeStreamResourceBundle, DataKey
from ophyd_async.core import StreamableDataProvider, soft_signal_r_and_setter

from ._eiger_layout import DECTRIS_LINKS_MIMETYPE, dectris_links_parameters

__all__ = ["Series", "SeriesBook", "SeriesStreamProvider"]


@dataclass
class Series:
    """One arm of the detector: its file name pattern and its frames in the stage."""

    name_pattern: str
    uri: str
    first_frame: int
    n_frames: int
    bundle: ComposeStreamResourceBundle
    announced: bool = False


@dataclass
class SeriesBook:
    """The series of one staged detector and the frames confirmed on disk.

    ``frames_written`` counts frames of completed series only (the file writer closes a
    data file before it can be read); `fail` records an error and releases whoever waits
    for frames, and `SeriesStreamProvider` then raises that error instead of announcing.
    """

    data_key: str = ""
    directory_uri: str = ""
    filename: str = ""
    frames_per_file: int = 1000
    series: list[Series] = field(default_factory=list)
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        self.frames_written, self._setter = soft_signal_r_and_setter(int, 0)
        self.count = 0
        #: Series names handed out since `reset` (a dropped series keeps its name used: the
        #: DCU wrote its master when it was armed).
        self.names_issued = 0

    def _set_frames(self, count: int) -> None:
        self.count = count
        self._setter(count)

    def reset(self, data_key: str, directory_uri: str, filename: str, per_file: int) -> None:
        """Forget every series: a new stage (or a new file name) starts from frame 0."""
        self.data_key, self.directory_uri, self.filename = data_key, directory_uri, filename
        self.frames_per_file, self.series, self.failure = per_file, [], None
        self.names_issued = 0
        self._set_frames(0)

    def next_name(self) -> str:
        """File name pattern of the next series (``<filename>_NNNN``)."""
        return f"{self.filename}_{self.names_issued + 1:04d}"

    def start_series(self, n_frames: int, series_id: int | None = None) -> Series:
        """Open the next series of ``n_frames`` frames (named `next_name`); return it.

        ``series_id`` is the DCU's number of the series (the ``sequence id`` its ``arm``
        answers, the ``series_id`` of its stream v2 messages); the stream resource carries
        it so a stream reader can match streamed images to these frames.
        """
        name = self.next_name()
        uri = f"{self.directory_uri}{name}_master.h5"
        parameters = dectris_links_parameters(self.frames_per_file)
        if series_id is not None:
            parameters["series_id"] = series_id
        bundle = ComposeStreamResource()(
            mimetype=DECTRIS_LINKS_MIMETYPE,
            uri=uri,
            data_key=self.data_key,
            parameters=parameters,
        )
        first = self.series[-1].first_frame + self.series[-1].n_frames if self.series else 0
        self.series.append(Series(name, uri, first, n_frames, bundle))
        self.names_issued += 1
        self.failure = None
        return self.series[-1]

    def drop_last(self) -> None:
        """Forget the last series: armed, then disarmed before any trigger (no frames)."""
        if self.series and not self.series[-1].announced:
            self.series.pop()

    def confirm(self) -> None:
        """The last series is complete and its files are closed."""
        last = self.series[-1]
        self._set_frames(last.first_frame + last.n_frames)

    def heartbeat(self) -> None:
        """Re-publish the frame count (waiters time out when nothing is published)."""
        self._set_frames(self.count)

    def fail(self, err: BaseException) -> None:
        """Record ``err`` and release waiters (they then meet the error, not frames)."""
        self.failure = err
        last = self.series[-1]
        self._set_frames(last.first_frame + last.n_frames)


class SeriesStreamProvider(StreamableDataProvider):
    """Stream documents for the frames of the series in a `SeriesBook`.

    Parameters
    ----------
    book
        The detector's series.
    frame_shape
        Frame (rows, columns).
    dtype_numpy
        Pixel type in the files, e.g. ``"<u4"``.
    source
        Source of the data key (the file writer's name-pattern URL).
    """

    def __init__(
        self, book: SeriesBook, frame_shape: tuple[int, int], dtype_numpy: str, source: str
    ) -> None:
        self.book, self.frame_shape = book, tuple(frame_shape)
        self.dtype_numpy, self.source = dtype_numpy, source
        self.collections_written_signal = book.frames_written
        self.last_emitted = 0

    async def make_datakeys(self, collections_per_event: int) -> dict[str, DataKey]:
        # ophyd-async's convention: collections per event first, [1, H, W] (see _eiger_layout).
        return {
            self.book.data_key: DataKey(
                source=self.source,
                shape=[collections_per_event, *self.frame_shape],
                dtype="array",
                dtype_numpy=self.dtype_numpy,
                external="STREAM:",
            )
        }

    async def make_stream_docs(
        self, collections_written: int, collections_per_event: int
    ) -> AsyncIterator[StreamAsset]:
        if self.book.failure is not None:
            raise self.book.failure
        stop_frame = collections_written
        for series in self.book.series:
            end = series.first_frame + series.n_frames
            if series.first_frame <= self.last_emitted * collections_per_event < end:
                stop_frame = min(stop_frame, end)  # never two datums for one key
                break
        stop = stop_frame // collections_per_event
        if stop <= self.last_emitted:
            return
        series = self._series_of(self.last_emitted * collections_per_event)
        if not series.announced:
            series.announced = True
            yield "stream_resource", series.bundle.stream_resource_doc
        offset = series.first_frame // collections_per_event
        indices = {"start": self.last_emitted - offset, "stop": stop - offset}
        self.last_emitted = stop
        yield "stream_datum", series.bundle.compose_stream_datum(indices)  # type: ignore[arg-type]

    def _series_of(self, frame: int) -> Series:
        for series in self.book.series:
            if series.first_frame <= frame < series.first_frame + series.n_frames:
                return series
        raise RuntimeError(f"{self.book.data_key}: frame {frame} belongs to no series")
