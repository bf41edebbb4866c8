"""The stream v2 codec and the stream source, on literal messages and a local PUSH socket."""

from __future__ import annotations

import time

import bitshuffle
import cbor2
import numpy as np
import pytest
import zmq

from opmap.callbacks.stream_frames import StreamFrameSource, decode_frame
from opmap.devices.stream2 import (
    CompressedFrame,
    StreamEnd,
    StreamImage,
    StreamMessageError,
    StreamStart,
    decode_message,
    encode_end,
    encode_image,
    encode_start,
)

from ._simplon_servers import free_port

FRAME = np.arange(4 * 24, dtype=np.uint32).reshape(4, 24) * 7


def _bslz4(frame: np.ndarray) -> CompressedFrame:
    """The HDF5 bitshuffle-LZ4 chunk of ``frame``: size, block size, LZ4 blocks."""
    block_bytes = 8192
    header = frame.nbytes.to_bytes(8, "big") + block_bytes.to_bytes(4, "big")
    body = bitshuffle.compress_lz4(frame, block_bytes // frame.itemsize).tobytes()
    return CompressedFrame("bslz4", frame.itemsize, header + body, frame.shape, frame.dtype)


def _image(**changes) -> bytes:
    body = dict(cbor2.loads(encode_image(3, "u", 5, {"threshold_1": _bslz4(FRAME)})))
    body.update(changes)
    return cbor2.dumps({k: v for k, v in body.items() if v is not None})


def test_an_image_round_trips_and_decompresses_to_the_same_pixels():
    message = decode_message(
        encode_image(3, "u", 5, {"threshold_1": _bslz4(FRAME)}, start_time_s=0.5, stop_time_s=0.6)
    )
    assert isinstance(message, StreamImage)
    assert (message.series_id, message.image_id, message.start_time_s) == (3, 5, 0.5)
    pixels = decode_frame(message.data["threshold_1"])
    assert pixels.dtype == np.uint32
    np.testing.assert_array_equal(pixels, FRAME)


def test_start_and_end_messages_carry_the_series():
    start = decode_message(
        encode_start(9, "u9", number_of_images=4, image_size_x=24, image_size_y=4)
    )
    assert isinstance(start, StreamStart)
    assert (start.series_id, start.number_of_images, start.image_shape) == (9, 4, (4, 24))
    assert decode_message(encode_end(9, "u9")) == StreamEnd(9, "u9")


@pytest.mark.parametrize(
    ("message", "names"),
    [
        (b"\xff\x00", "not a CBOR message"),
        (cbor2.dumps([1, 2]), "not a map"),
        (cbor2.dumps({"type": "picture"}), "field 'type'"),
        (_image(image_id=None), "field 'image_id' is missing"),
        (_image(image_id="5"), "field 'image_id'"),
        (_image(series_id=None), "field 'series_id' is missing"),
        (_image(data={}), "field 'data' has no channel"),
        (_image(data={"threshold_1": b"raw"}), "field 'data.threshold_1'"),
        (
            _image(data={"threshold_1": cbor2.CBORTag(40, [[4, 24], cbor2.CBORTag(99, b"")])}),
            "typed array tag 99",
        ),
        (_image(start_time=[1, 0]), "field 'start_time'"),
        (cbor2.dumps({"type": "start", "series_id": 1}), "start message: field 'image_size_y'"),
    ],
)
def test_bad_messages_are_refused_naming_the_field(message, names):
    with pytest.raises(StreamMessageError, match=names):
        decode_message(message)


def test_corrupt_compressed_data_is_refused_naming_the_image_data():
    frame = _bslz4(FRAME)
    truncated = CompressedFrame("bslz4", 4, frame.data[:-5], frame.shape, frame.dtype)
    with pytest.raises(StreamMessageError, match="image data: corrupt or truncated"):
        decode_frame(truncated)
    with pytest.raises(StreamMessageError, match="compression 'lz4'"):
        decode_frame(CompressedFrame("lz4", 0, b"", frame.shape, frame.dtype))


def _take(source: StreamFrameSource, series_id: int, image_ids) -> dict:
    """`take` once the series' start has arrived (a DCU's arm comes long before its datum)."""
    deadline = time.monotonic() + 5
    while not source.series_seen(series_id) and time.monotonic() < deadline:
        time.sleep(0.01)
    return source.take(series_id, image_ids)


@pytest.fixture
def push():
    port = free_port()
    socket = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(f"tcp://127.0.0.1:{port}")
    with StreamFrameSource(f"tcp://127.0.0.1:{port}", series_wait_s=5.0) as source:
        yield socket, source
    socket.close()


def test_the_source_keeps_good_images_and_reports_bad_ones_by_field(push):
    socket, source = push
    socket.send(encode_start(3, "u", number_of_images=2, image_size_x=24, image_size_y=4))
    socket.send(_image(image_id=None))  # refused, logged, the files would fill it
    socket.send(encode_image(3, "u", 0, {"threshold_1": _bslz4(FRAME)}))
    socket.send(encode_image(3, "u", 1, {"threshold_2": _bslz4(FRAME)}))  # wrong channel
    socket.send(encode_end(3, "u"))
    taken = _take(source, 3, range(2))
    assert sorted(taken) == [0]
    np.testing.assert_array_equal(taken[0].value, FRAME)
    assert not taken[0].reduced and taken[0].done_s >= taken[0].received_s
    assert len(source.errors) == 2
    assert "field 'image_id' is missing" in source.errors[0]
    assert "series 3 image 1" in source.errors[1] and "'threshold_1'" in source.errors[1]


def test_an_image_arriving_after_its_row_was_claimed_is_dropped(push):
    socket, source = push
    assert source.take(4, [0]) == {}  # no start seen: nothing to wait for, row claimed
    socket.send(encode_image(4, "u", 0, {"threshold_1": _bslz4(FRAME)}))
    deadline = time.monotonic() + 5
    while source.late == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.late == 1
    assert source.take(4, [0]) == {}


def test_the_source_reduces_images_as_they_arrive_once_told_how(push):
    socket, source = push
    source.reduce_with(lambda frames: frames.sum(axis=(1, 2), dtype=np.float64)[:, None])
    socket.send(encode_start(5, "u", number_of_images=1, image_size_x=24, image_size_y=4))
    socket.send(encode_image(5, "u", 0, {"threshold_1": _bslz4(FRAME)}))
    socket.send(encode_end(5, "u"))
    frame = _take(source, 5, [0])[0]
    assert frame.reduced and frame.value.tolist() == [float(FRAME.sum())]


def test_a_frame_the_reduction_refuses_is_reported_and_left_to_the_files(push):
    socket, source = push

    def wrong_geometry(frames):
        raise ValueError(f"frames of shape {frames.shape[1:]} do not fit the geometry")

    source.reduce_with(wrong_geometry)
    socket.send(encode_start(6, "u", number_of_images=1, image_size_x=24, image_size_y=4))
    socket.send(encode_image(6, "u", 0, {"threshold_1": _bslz4(FRAME)}))
    socket.send(encode_end(6, "u"))
    assert _take(source, 6, [0]) == {}
    assert len(source.errors) == 1
    assert "series 6 image 0: not reduced" in source.errors[0] and "(4, 24)" in source.errors[0]


def test_source_options_are_checked():
    with pytest.raises(ValueError, match="decode_threads"):
        StreamFrameSource("tcp://127.0.0.1:1", decode_threads=0)
    with pytest.raises(ValueError, match="series_wait_s"):
        StreamFrameSource("tcp://127.0.0.1:1", series_wait_s=-1)
    with pytest.raises(ValueError, match="max_pending"):
        StreamFrameSource("tcp://127.0.0.1:1", max_pending=0)
