"""Live frames from the detector's stream v2, with the files as the record that fills gaps.

:class:`StreamFrameSource` connects a ZeroMQ PULL socket to a DCU's stream v2 (CBOR
start / image / end messages, `opmap.devices.stream2`). A receiving thread decodes each
message; worker threads decompress each image's bitshuffle-LZ4 chunk (outside the GIL) and,
once the live analysis has said how (`StreamFrameSource.reduce_with`), reduce it at once.
Results are kept by ``(series_id, image_id)`` until claimed.

The documents still say which frames exist: a SIMPLON Eiger's ``stream_resource`` names
its series (``parameters["series_id"]``), row ``i`` of it is image ``i`` of that series.
:func:`reduce_datum_rows` takes each announced row from the stream when it came, reads the
others from the files (a gap: images the stream lost), and claims every row, so a late image
is dropped, never counted twice. Nothing waits for the files unless the stream has a gap.

Examples
--------
::

    stream = StreamFrameSource("tcp://dcu:31001").start()
    live = LiveAnalysis(params, geometry, frame_stream=stream)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

import numpy as np
import zmq

from opmap.analysis.frames import decode_bslz4_chunk
from opmap.devices.stream2 import (
    CompressedFrame,
    StreamEnd,
    StreamImage,
    StreamMessageError,
    StreamStart,
    decode_message,
)

from .frames import DatumRows, FrameReader

__all__ = ["StreamFrameSource", "StreamedFrame", "decode_frame", "reduce_datum_rows"]

logger = logging.getLogger(__name__)

#: ``reduce(frames (n, H, W)) -> packed (n, n_outputs)``: the live analysis's reduction.
Reduce = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StreamedFrame:
    """One image taken from the stream.

    Attributes
    ----------
    series_id, image_id : int
        Where the detector numbered it.
    value : numpy.ndarray
        The packed reduction ``(n_outputs,)`` when ``reduced``, else the frame ``(H, W)``.
    reduced : bool
        Whether ``value`` is already reduced.
    received_s, done_s : float
        ``time.monotonic()`` (the system's monotonic clock, shared by its processes) when
        its message arrived and when it was decoded (and reduced).
    user_data : any
        The message's ``user_data`` (a DCU's ``stream/config/image_appendix``).
    """

    series_id: int
    image_id: int
    value: np.ndarray
    reduced: bool
    received_s: float
    done_s: float
    user_data: object = None


def decode_frame(frame: CompressedFrame) -> np.ndarray:
    """The pixels of one streamed channel, ``frame.shape`` of ``frame.dtype``.

    Raises
    ------
    StreamMessageError
        An algorithm opmap does not decode (``lz4``) or bytes that do not decode.
    """
    if frame.algorithm == "none":
        raw = np.frombuffer(frame.data, frame.dtype)
        if raw.size != frame.shape[0] * frame.shape[1]:
            raise StreamMessageError(f"image data: {raw.size} pixels, not {frame.shape}")
        return raw.reshape(frame.shape)
    if frame.algorithm != "bslz4" or frame.elem_size != frame.dtype.itemsize:
        raise StreamMessageError(
            f"image data: compression {frame.algorithm!r} (element size {frame.elem_size}) "
            f"is not bslz4 of {frame.dtype}"
        )
    try:
        return decode_bslz4_chunk(frame.data, frame.shape, frame.dtype)
    except ValueError as error:
        raise StreamMessageError(f"image data: {error}") from error


class StreamFrameSource:
    """A PULL client of a DCU's stream v2 keeping decoded frames by ``(series, image)``.

    Parameters
    ----------
    endpoint : str
        The DCU's stream, e.g. ``"tcp://10.0.0.17:31001"``.
    decode_threads : int
        Threads decompressing (and reducing) images, >= 1.
    channel : str
        Image channel to keep (``threshold_1`` on a one-threshold Eiger).
    series_wait_s : float
        How long `take` waits for a series' ``end`` message and its last decodes (s, >= 0);
        rows still missing then are read from the files.
    max_pending : int
        Images received but not yet decoded, at most (>= 1); beyond it the receiving
        thread stops reading, so ZeroMQ (and the DCU's buffer) hold the rest instead of
        this process's memory.

    Attributes
    ----------
    errors : list of str
        Messages refused (bad CBOR, a missing or mistyped field, undecodable data), each
        naming the field; they are logged and skipped, the files fill their frames.
    late : int
        Images that arrived after their rows were claimed (dropped, not counted).
    from_stream, from_files : int
        Rows `reduce_datum_rows` took from the stream and read from the files.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        decode_threads: int = 2,
        channel: str = "threshold_1",
        series_wait_s: float = 2.0,
        max_pending: int = 32,
    ) -> None:
        if decode_threads < 1:
            raise ValueError(f"decode_threads={decode_threads} must be >= 1")
        if max_pending < 1:
            raise ValueError(f"max_pending={max_pending} must be >= 1")
        self._slots = threading.BoundedSemaphore(max_pending)
        if not series_wait_s >= 0:
            raise ValueError(f"series_wait_s={series_wait_s} must be >= 0 s")
        self.endpoint, self.channel, self.series_wait_s = endpoint, channel, series_wait_s
        self.errors: list[str] = []
        self.late = self.from_stream = self.from_files = 0
        self._reduce: Reduce | None = None
        self._frames: dict[tuple[int, int], StreamedFrame] = {}
        self._claimed: dict[int, set[int]] = {}
        self._pending: dict[int, int] = {}
        self._received: dict[int, int] = {}
        self._started: set[int] = set()
        self._ended: set[int] = set()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            decode_threads, thread_name_prefix="stream-decode"
        )
        self._thread = threading.Thread(target=self._receive, name="stream-receive", daemon=True)
        self._socket = zmq.Context.instance().socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, max_pending)

    def start(self) -> Self:
        """Connect and start receiving; return self."""
        self._socket.connect(self.endpoint)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop receiving, finish the decodes under way, close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True)
        self._socket.close(linger=0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reduce_with(self, reduce: Reduce | None) -> None:
        """Reduce every image decoded from now on with ``reduce`` (None: keep frames)."""
        self._reduce = reduce

    def series_seen(self, series_id: int) -> bool:
        """Whether the ``start`` message of series ``series_id`` arrived."""
        with self._changed:
            return series_id in self._started

    def wait_for_images(self, series_id: int, count: int, timeout_s: float) -> int:
        """Wait until ``count`` images of series ``series_id`` arrived and are decoded (or
        ``timeout_s`` passed); the number that arrived. For a stream that may send a
        series' ``end`` before its last image (tickit-devices' simulator under load)."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    self._received.get(series_id, 0) >= count and not self._pending.get(series_id)
                ),
                timeout=timeout_s,
            )
            return self._received.get(series_id, 0)

    def wait_for_series_end(self, timeout_s: float) -> list[int]:
        """Wait until some series has ended and its images are decoded; the ended series."""
        with self._changed:
            self._changed.wait_for(
                lambda: any(not self._pending.get(s) for s in self._ended), timeout=timeout_s
            )
            return sorted(self._ended)

    def take(self, series_id: int, image_ids: Iterable[int]) -> dict[int, StreamedFrame]:
        """Claim images of one series: those received are returned (by image id) and
        forgotten, and any of them arriving later is dropped (``late``).

        When the series' ``start`` was seen, waits up to ``series_wait_s`` for its ``end``
        and its pending decodes (or for every wanted image) first.
        """
        wanted = set(image_ids)
        with self._changed:
            if series_id in self._started:
                self._changed.wait_for(
                    lambda: self._settled(series_id, wanted), timeout=self.series_wait_s
                )
            self._claimed.setdefault(series_id, set()).update(wanted)
            found = [i for i in wanted if (series_id, i) in self._frames]
            return {i: self._frames.pop((series_id, i)) for i in found}

    def _settled(self, series_id: int, wanted: set[int]) -> bool:
        if all((series_id, i) in self._frames for i in wanted):
            return True
        return series_id in self._ended and not self._pending.get(series_id)

    def _receive(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            message = self._socket.recv(copy=False)
            self._handle(message.buffer, time.monotonic())

    def _handle(self, message: bytes | memoryview, received_s: float) -> None:
        try:
            decoded = decode_message(message)
        except StreamMessageError as error:
            self._refuse(str(error))
            return
        with self._changed:
            if isinstance(decoded, StreamStart):
                self._started.add(decoded.series_id)
            elif isinstance(decoded, StreamEnd):
                self._ended.add(decoded.series_id)
            elif isinstance(decoded, StreamImage):
                sid = decoded.series_id
                self._pending[sid] = self._pending.get(sid, 0) + 1
                self._received[sid] = self._received.get(sid, 0) + 1
            self._changed.notify_all()
        if isinstance(decoded, StreamImage):
            self._slots.acquire()  # back-pressure: at most max_pending images in flight
            self._pool.submit(self._decode, decoded, received_s)

    def _refuse(self, reason: str) -> None:
        logger.error("stream %s: message refused: %s", self.endpoint, reason)
        with self._changed:
            self.errors.append(reason)

    def _decode(self, image: StreamImage, received_s: float) -> None:
        # A frame that cannot be decoded or reduced is reported (``errors``, the log) and
        # left to the files; the decoding thread goes on with the next image.
        sid, iid = image.series_id, image.image_id
        done = None
        try:
            done = self._decoded(image, received_s)
        except StreamMessageError as error:
            self._refuse(f"series {sid} image {iid}: {error}")
        except Exception as error:
            logger.exception("stream %s: series %s image %s not reduced", self.endpoint, sid, iid)
            self._refuse(f"series {sid} image {iid}: not reduced: {error!r}")
        finally:
            self._slots.release()
        with self._changed:
            self._pending[sid] -= 1
            if done is not None and iid in self._claimed.get(sid, ()):
                self.late += 1
            elif done is not None:
                self._frames[(sid, iid)] = done
            self._changed.notify_all()

    def _decoded(self, image: StreamImage, received_s: float) -> StreamedFrame:
        frame = image.data.get(self.channel)
        if frame is None:
            raise StreamMessageError(
                f"image message: field 'data' has no channel {self.channel!r}"
            )
        value, reduce = decode_frame(frame), self._reduce
        if reduce is not None:
            value = reduce(value[np.newaxis])[0]
        return StreamedFrame(
            image.series_id,
            image.image_id,
            value,
            reduce is not None,
            received_s,
            time.monotonic(),
            image.user_data,
        )


def reduce_datum_rows(
    rows: DatumRows, reader: FrameReader, stream: StreamFrameSource, reduce: Reduce
) -> tuple[np.ndarray, np.ndarray]:
    """Packed reductions of the frames one ``stream_datum`` announces, stream first.

    Rows the stream delivered (image id = resource row) are taken from it; the others are
    read from the files by ``reader`` in contiguous runs. Every row is claimed once.

    Returns
    -------
    frame_indices : numpy.ndarray
        0-based frame indices in the stream of events, int64 ``(n,)``, in row order.
    packed : numpy.ndarray
        ``reduce`` output for those frames, ``(n, n_outputs)``.
    """
    if rows.series_id is None:
        raise ValueError(f"stream_resource of {rows.uri} names no series_id: read the files")
    start, stop = rows.rows
    if stop == start:
        return rows.frame_indices, np.empty((0, 0), np.float32)
    streamed = stream.take(rows.series_id, range(start, stop))
    packed: dict[int, np.ndarray] = {}
    for image_id, frame in streamed.items():
        packed[image_id] = frame.value if frame.reduced else reduce(frame.value[np.newaxis])[0]
    for lo, hi in _missing_runs(start, stop, packed):
        seq0 = rows.seq[0] + lo - start
        gap = dataclasses.replace(rows, rows=(lo, hi), seq=(seq0, seq0 + hi - lo))
        for k, row in enumerate(reduce(reader.read(gap).values)):
            packed[lo + k] = row
    stream.from_stream += len(streamed)
    stream.from_files += (stop - start) - len(streamed)
    return rows.frame_indices, np.stack([packed[i] for i in range(start, stop)])


def _missing_runs(start: int, stop: int, have: dict[int, np.ndarray]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for row in range(start, stop):
        if row in have:
            continue
        if runs and runs[-1][1] == row:
            runs[-1] = (runs[-1][0], row + 1)
        else:
            runs.append((row, row + 1))
    return runs
