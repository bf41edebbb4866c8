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
    # ophyd-async's SimMotor and SimBlobDetector both run on the wall clock, so on a loaded
    # machine the frames' timing against the motor is loose (a late frame may even see
    # the motor at rest at its run-down end): the stored x is the motor's readback, in the
    # order of flight, on its travel from run-up start to run-down end. (Exact agreement
    # with the true position: tests/callbacks/test_measured_x.py, on the simulation clock.)
    det, stage_x, stage_z, _ = devices
    RE(fly_map(det, stage_x, stage_z, SMALL_MAP))
    run_up_um = 0.5 * 0.01 * SMALL_MAP.x_velocity_um_per_s  # acceleration_time 0.01 s
    for line in _line_records(docs):
        measured = np.asarray(line["data"]["line_x_measured_um"])
        commanded = np.asarray(line["data"]["line_x_um"])
        assert measured.shape == commanded.shape and np.all(np.isfinite(measured))
        flight = np.sign(commanded[-1] - commanded[0])
        assert np.all(np.diff(measured) * flight >= 0) and np.ptp(measured) > 0
        assert SMALL_MAP.x_start_um - run_up_um - 1e-9 <= measured.min()
        assert measured.max() <= SMALL_MAP.x_stop_um + run_up_um + 1e-9
    (lines_desc,) = [d for d in docs.of("descriptor") if d["name"] == "lines"]
    lines_key = lines_desc["data_keys"]["line_x_measured_um"]
    assert lines_key["units"] == "um" and lines_key["shape"] == [SMALL_MAP.x_count]
