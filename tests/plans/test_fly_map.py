"""fly_map on ophyd-async sim devices through a real RunEngine."""

from __future__ import annotations

import numpy as np

from opmap.plans import fly_map

from .conftest import SMALL_MAP


def _line_records(docs):
    return docs.events_by_stream()["lines"]


def test_fly_map_announces_every_frame_once_with_its_x(RE, docs, devices):
    det, stage_x, stage_z, _ = devices
    result = RE(fly_map(det, stage_x, stage_z, SMALL_MAP, md={"sample": "cell A"}))
    assert result.exit_status == "success"
    (start,) = docs.of("start")
    assert start["plan_name"] == "fly_map" and start["sample"] == "cell A"
    # bluesky's grid-scan keys: z (slow) then x (fast), extents at the frame centres
    assert start["shape"] == [3, 5] and start["num_points"] == 15
    assert start["num_intervals"] == 14 and start["snaking"] == [False, SMALL_MAP.snake]
    assert start["extents"] == [[2.0, 4.0], [5.0, 45.0]]
    datums = [d for d in docs.of("stream_datum") if d["descriptor"]]
    frames = {d["stream_resource"]: 0 for d in datums}
    for d in datums:
        frames[d["stream_resource"]] += d["indices"]["stop"] - d["indices"]["start"]
    assert sorted(frames.values()) == [15, 15]  # image and sum, 3 lines x 5 frames
    lines = _line_records(docs)
    assert [e["data"]["line_index"] for e in lines] == [0, 1, 2]
    assert [e["data"]["line_first_frame"] for e in lines] == [0, 5, 10]
    assert [e["data"]["stage_z"] for e in lines] == [2.0, 3.0, 4.0]
    np.testing.assert_allclose(lines[0]["data"]["line_x_um"], [5, 15, 25, 35, 45])
    (stop,) = docs.of("stop")
    assert stop["num_events"] == {"primary": 15, "lines": 3}


def test_fly_map_stores_each_frame_x_measured_by_the_motor_readback(RE, docs, devices):
    # ophyd-async's SimMotor on the wall clock: its readback (updated every 10 ms while it
    # moves) interpolated at each frame's mid-exposure lies on the motor's travel, in the
    # order of flight, near the commanded centre (wall-clock timing on a loaded machine
    # moves a frame by a fraction of its bin, never past the line's ends)
    det, stage_x, stage_z, _ = devices
    RE(fly_map(det, stage_x, stage_z, SMALL_MAP))
    for line in _line_records(docs):
        measured = np.asarray(line["data"]["line_x_measured_um"])
        commanded = np.asarray(line["data"]["line_x_um"])
        assert measured.shape == commanded.shape and np.all(np.isfinite(measured))
        flight = np.sign(commanded[-1] - commanded[0])
        assert np.all(np.diff(measured) * flight > 0)
        assert SMALL_MAP.x_start_um <= measured.min() and measured.max() <= SMALL_MAP.x_stop_um
    described = docs.of("descriptor")
    (lines_key,) = [
        d["data_keys"]["line_x_measured_um"] for d in described if d["name"] == "lines"
    ]
    assert lines_key["units"] == "um" and lines_key["shape"] == [SMALL_MAP.x_count]
