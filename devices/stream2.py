"""The Dectris stream v2 wire format: CBOR start / image / end messages over ZeroMQ.

A DCU with ``stream/config/mode = enabled`` (and ``format = cbor``) pushes one CBOR message
per ZeroMQ message on a PUSH socket, TCP port 31001 by default; clients connect a PULL
socket. Each message is a map whose ``type`` is ``start`` (at ``arm``), ``image`` (one per
exposure) or ``end`` (at ``disarm``), all carrying ``series_id``. An image's ``data`` maps
each channel (``threshold_1``, ...) to a multi-dimensional array (RFC 8746 tag 40:
``[[rows, columns], typed array]``) whose typed array (tag 64 uint8, 69 uint16 LE, 70
uint32 LE, ...) holds either raw bytes or DECTRIS's compressed byte string, tag 56500
``["bslz4", element size, bytes]``: the HDF5 bitshuffle-LZ4 chunk format, the very bytes the
file writer stores as one chunk per frame.

This module encodes and decodes the messages; it decompresses nothing (a `CompressedFrame`
keeps the bytes, so the caller decompresses on its own threads).

Examples
--------
>>> import numpy as np
>>> raw = np.arange(6, dtype=np.uint32).reshape(2, 3)
>>> frame = CompressedFrame("none", 4, raw.tobytes(), (2, 3), np.dtype("<u4"))
>>> message = decode_message(encode_image(7, "u7", 0, {"threshold_1": frame}))
>>> message.series_id, message.image_id, message.data["threshold_1"].shape
(7, 0, (2, 3))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
import numpy as np

__all__ = [
    "DEFAULT_STREAM_PORT",
    "CompressedFrame",
    "StreamEnd",
    "StreamImage",
    "StreamMessageError",
    "StreamStart",
    "decode_message",
    "encode_end",
    "encode_image",
    "encode_start",
]

#: The DCU's stream v2 port.
DEFAULT_STREAM_PORT = 31001
#: DECTRIS compressed byte string (``["bslz4" | "lz4", modifier, bytes]``).
COMPRESSION_TAG = 56500
#: RFC 8746 multi-dimensional array, row-major.
MULTIDIM_TAG = 40
#: RFC 8949 self-described CBOR (tickit-devices prefixes every message with it).
SELF_DESCRIBED_TAG = 55799
#: RFC 8746 typed-array tags of the pixel types a Dectris detector streams.
TYPED_ARRAY_TAGS = {64: np.dtype("u1"), 69: np.dtype("<u2"), 70: np.dtype("<u4")}
_TAG_OF_DTYPE = {dtype: tag for tag, dtype in TYPED_ARRAY_TAGS.items()}


class StreamMessageError(ValueError):
    """A stream v2 message that does not follow the format; the message names the field."""


@dataclass(frozen=True)
class CompressedFrame:
    """One channel of one image as streamed, not decompressed.

    Attributes
    ----------
    algorithm : str
        ``"bslz4"`` (HDF5 bitshuffle-LZ4 chunk framing), ``"lz4"``, or ``"none"`` (raw).
    elem_size : int
        Bytes per pixel (the bitshuffle element size).
    data : bytes
        The compressed (or raw) bytes.
    shape : (int, int)
        (rows, columns) of the frame.
    dtype : numpy.dtype
        Pixel type (little-endian unsigned).
    """

    algorithm: str
    elem_size: int
    data: bytes
    shape: tuple[int, int]
    dtype: np.dtype


@dataclass(frozen=True)
class StreamStart:
    """A ``start`` message: the series' configuration (every field kept in ``fields``)."""

    series_id: int
    series_unique_id: str
    number_of_images: int
    image_shape: tuple[int, int]
    channels: tuple[str, ...]
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class StreamImage:
    """An ``image`` message: one exposure, one `CompressedFrame` per channel."""

    series_id: int
    series_unique_id: str
    image_id: int
    data: Mapping[str, CompressedFrame]
    start_time_s: float
    stop_time_s: float
    user_data: Any = None


@dataclass(frozen=True)
class StreamEnd:
    """An ``end`` message: the series is over (no more images)."""

    series_id: int
    series_unique_id: str


StreamMessage = StreamStart | StreamImage | StreamEnd


def _typed_array(frame: CompressedFrame) -> cbor2.CBORTag:
    tag = _TAG_OF_DTYPE.get(np.dtype(frame.dtype))
    if tag is None:
        raise StreamMessageError(f"data: pixel type {frame.dtype} has no stream v2 tag")
    if frame.algorithm == "none":
        return cbor2.CBORTag(tag, bytes(frame.data))
    payload = [frame.algorithm, int(frame.elem_size), bytes(frame.data)]
    return cbor2.CBORTag(tag, cbor2.CBORTag(COMPRESSION_TAG, payload))


def _rational(seconds: float, base_hz: int = 10_000_000) -> list[int]:
    return [round(seconds * base_hz), base_hz]


def _dumps(message: Mapping[str, Any]) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(SELF_DESCRIBED_TAG, dict(message)))


def encode_start(series_id: int, series_unique_id: str, **fields: Any) -> bytes:
    """A ``start`` message; ``fields`` are the spec's (``number_of_images``, ``image_size_x``,
    ``image_size_y``, ``channels``, ``count_time``, ...)."""
    head = {"type": "start", "series_id": series_id, "series_unique_id": series_unique_id}
    return _dumps({**head, **fields})


def encode_image(
    series_id: int,
    series_unique_id: str,
    image_id: int,
    data: Mapping[str, CompressedFrame],
    *,
    start_time_s: float = 0.0,
    stop_time_s: float = 0.0,
    user_data: Any = None,
) -> bytes:
    """An ``image`` message with one multi-dimensional array per channel of ``data``."""
    arrays = {
        channel: cbor2.CBORTag(MULTIDIM_TAG, [list(frame.shape), _typed_array(frame)])
        for channel, frame in data.items()
    }
    return _dumps(
        {
            "type": "image",
            "series_id": series_id,
            "series_unique_id": series_unique_id,
            "image_id": image_id,
            "real_time": _rational(stop_time_s - start_time_s),
            "start_time": _rational(start_time_s),
            "stop_time": _rational(stop_time_s),
            "data": arrays,
            "user_data": user_data,
        }
    )


def encode_end(series_id: int, series_unique_id: str) -> bytes:
    """An ``end`` message."""
    return _dumps({"type": "end", "series_id": series_id, "series_unique_id": series_unique_id})


def decode_message(message: bytes) -> StreamMessage:
    """Decode one stream v2 message (its bytes, as one ZeroMQ message).

    Raises
    ------
    StreamMessageError
        Not CBOR, not a map, an unknown ``type``, or a missing or mistyped field (the
        message names the message type and the field).
    """
    try:
        body = cbor2.loads(message)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as error:
        raise StreamMessageError(f"not a CBOR message: {error}") from error
    if not isinstance(body, Mapping):
        raise StreamMessageError(f"message is a CBOR {type(body).__name__}, not a map")
    kind = body.get("type")
    decoders = {"start": _decode_start, "image": _decode_image, "end": _decode_end}
    if kind not in decoders:
        raise StreamMessageError(f"field 'type' = {kind!r} is not one of {sorted(decoders)}")
    return decoders[kind](body)


def _get(body: Mapping[str, Any], name: str, kind: Any) -> Any:
    if name not in body:
        raise StreamMessageError(f"{body['type']} message: field {name!r} is missing")
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StreamMessageError(
            f"{body['type']} message: field {name!r} = {value!r:.80} is not {_name(kind)}"
        )
    return value


def _name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _series(body: Mapping[str, Any]) -> tuple[int, str]:
    return _get(body, "series_id", int), str(body.get("series_unique_id", ""))


def _decode_start(body: Mapping[str, Any]) -> StreamStart:
    series_id, unique = _series(body)
    shape = (_get(body, "image_size_y", int), _get(body, "image_size_x", int))
    channels = tuple(body.get("channels") or ())
    return StreamStart(
        series_id, unique, _get(body, "number_of_images", int), shape, channels, body
    )


def _decode_end(body: Mapping[str, Any]) -> StreamEnd:
    return StreamEnd(*_series(body))


def _decode_image(body: Mapping[str, Any]) -> StreamImage:
    series_id, unique = _series(body)
    image_id = _get(body, "image_id", int)
    data = _get(body, "data", Mapping)
    if not data:
        raise StreamMessageError("image message: field 'data' has no channel")
    frames = {str(channel): _decode_array(channel, array) for channel, array in data.items()}
    start_s, stop_s = _seconds(body, "start_time"), _seconds(body, "stop_time")
    return StreamImage(series_id, unique, image_id, frames, start_s, stop_s, body.get("user_data"))


def _seconds(body: Mapping[str, Any], name: str) -> float:
    value = body.get(name)
    if value is None:
        return float("nan")
    if not (isinstance(value, Sequence) and len(value) == 2 and value[1]):
        raise StreamMessageError(f"image message: field {name!r} = {value!r} is not a rational")
    return value[0] / value[1]


def _decode_array(channel: str, array: Any) -> CompressedFrame:
    where = f"image message: field 'data.{channel}'"
    if not (isinstance(array, cbor2.CBORTag) and array.tag == MULTIDIM_TAG):
        raise StreamMessageError(f"{where} is not a multi-dimensional array (tag 40)")
    if not (isinstance(array.value, Sequence) and len(array.value) == 2):
        raise StreamMessageError(f"{where} is not [dimensions, typed array]")
    dims, typed = array.value
    if not (isinstance(dims, Sequence) and len(dims) == 2 and all(type(d) is int for d in dims)):
        raise StreamMessageError(f"{where}: dimensions {dims!r} are not [rows, columns]")
    if not (isinstance(typed, cbor2.CBORTag) and typed.tag in TYPED_ARRAY_TAGS):
        tag = getattr(typed, "tag", type(typed).__name__)
        known = sorted(TYPED_ARRAY_TAGS)
        raise StreamMessageError(f"{where}: typed array tag {tag} is not one of {known}")
    dtype, payload = TYPED_ARRAY_TAGS[typed.tag], typed.value
    shape = (dims[0], dims[1])
    if isinstance(payload, bytes):
        return CompressedFrame("none", dtype.itemsize, payload, shape, dtype)
    if not (isinstance(payload, cbor2.CBORTag) and payload.tag == COMPRESSION_TAG):
        raise StreamMessageError(f"{where}: neither bytes nor a compressed byte string (56500)")
    if not (isinstance(payload.value, Sequence) and len(payload.value) == 3):
        raise StreamMessageError(f"{where}: tag 56500 is not [algorithm, modifier, bytes]")
    algorithm, elem_size, encoded = payload.value
    if not isinstance(encoded, bytes) or algorithm not in ("bslz4", "lz4"):
        raise StreamMessageError(f"{where}: compression {algorithm!r} with {type(encoded)}")
    return CompressedFrame(str(algorithm), int(elem_size), encoded, shape, dtype)
