"""Live frames over the Dectris stream v2 of ``opmap sim-dcu`` (a process), files as the record.

The SIMPLON Eiger takes series over HTTP; the DCU writes its files and pushes the same
compressed chunks as CBOR over ZeroMQ. `StreamFrameSource` pulls them; the stream resource
names the series (the ``sequence id`` of ``arm``), and `reduce_datum_rows` takes each
announced row from the stream, or from the files where the stream has a gap.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from ophyd_async.core import TriggerInfo

from opmap.callbacks.frames import FrameReader
from opmap.callbacks.stream_frames import StreamFrameSource, reduce_datum_rows

from .devices._simplon_servers import free_port, initialize, sim_dcu
from .test_sim_dcu import _eiger, _series, read_frames

pytestmark = pytest.mark.slow

STREAM_API = "stream/api/1.8.0"


def _flat(frames: np.ndarray) -> np.ndarray:
    """A 'reduction' that keeps every pixel, so equality is bit for bit."""
    return np.asarray(frames).reshape(len(frames), -1)


@pytest.fixture(scope="module")
def streaming_dcu(tmp_path_factory):
    data_dir, port = tmp_path_factory.mktemp("dcu-stream"), free_port()
    with sim_dcu(data_dir, "--stream-port", str(port)) as base_url:
        initialize(base_url)
        mode = f"{base_url}/{STREAM_API}/config/mode"
        httpx.put(mode, json={"value": "enabled"}, timeout=10).raise_for_status()
        with StreamFrameSource(f"tcp://127.0.0.1:{port}", series_wait_s=10.0) as source:
            yield base_url, data_dir, source


def _take_series(RE, base_url, data_dir, stem, n_frames):
    eiger = _eiger(RE, base_url, data_dir, stem, per_file=2)
    docs = []
    info = TriggerInfo(number_of_events=n_frames, livetime=0.01)
    RE(_series(eiger, info), lambda n, d: docs.append((n, d)))
    reader = FrameReader()
    rows = []
    for name, doc in docs:
        reader(name, doc) if name != "stream_datum" else rows.append(reader.locate(doc))
    resource = next(d for n, d in docs if n == "stream_resource")
    datum = next(d for n, d in docs if n == "stream_datum")
    return reader, rows, read_frames(resource, datum["indices"])


def test_stream_frames_equal_the_files_bit_for_bit(RE, streaming_dcu):
    base_url, data_dir, source = streaming_dcu
    source.reduce_with(None)  # frames kept whole, reduced when claimed
    before = (source.from_stream, source.from_files)
    reader, rows, in_files = _take_series(RE, base_url, data_dir, "whole", 5)
    assert len(rows) == 1 and rows[0].series_id is not None
    indices, flat = reduce_datum_rows(rows[0], reader, source, _flat)
    np.testing.assert_array_equal(indices, np.arange(5))
    np.testing.assert_array_equal(flat, _flat(in_files))
    assert flat.dtype == np.uint32
    assert (source.from_stream - before[0], source.from_files - before[1]) == (5, 0)
    assert source.errors == []


def test_a_gap_in_the_stream_is_read_from_the_files_and_nothing_counts_twice(RE, streaming_dcu):
    base_url, data_dir, source = streaming_dcu
    source.reduce_with(_flat)  # reduced on the decoding threads as they arrive
    drop = httpx.put(f"{base_url}/opmap/api/1/stream_drop", json={"value": 2}, timeout=10)
    drop.raise_for_status()
    before = (source.from_stream, source.from_files)
    reader, rows, in_files = _take_series(RE, base_url, data_dir, "gap", 6)
    indices, flat = reduce_datum_rows(rows[0], reader, source, _flat)
    np.testing.assert_array_equal(indices, np.arange(6))
    np.testing.assert_array_equal(flat, _flat(in_files))
    assert (source.from_stream - before[0], source.from_files - before[1]) == (4, 2)
    # claimed rows are gone: a second claim finds nothing in the stream
    assert source.take(rows[0].series_id, range(6)) == {}
    assert source.late == 0


def test_stream_mode_is_validated_and_off_by_default(streaming_dcu, tmp_path):
    base_url, _, _ = streaming_dcu
    bad = httpx.put(f"{base_url}/{STREAM_API}/config/mode", json={"value": "on"}, timeout=10)
    assert bad.status_code == 400 and "mode" in bad.text
    with sim_dcu(tmp_path) as fresh:
        reply = httpx.get(f"{fresh}/{STREAM_API}/config/mode", timeout=10).json()
        assert reply["value"] == "disabled"
        no_stream = httpx.put(f"{fresh}/opmap/api/1/stream_drop", json={"value": 1}, timeout=10)
        assert no_stream.status_code == 400
