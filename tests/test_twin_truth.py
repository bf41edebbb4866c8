"""The twin's ground truth, one implementation in process and over the network.

`opmap.twin_truth.map_truth` is what both the in-process rehearsal and ``opmap
sim-beamline``'s truth channel compute; the channel serves exactly its arrays (npz, NaN
kept) and the cell's clock, refuses bad requests naming the field, and the rehearsal's
bookkeeping notes a network map's cell times on the child's clock.
"""

from __future__ import annotations

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from opmap import rehearse
from opmap.analysis.products import LabelledArray
from opmap.sim_beamline import SimBeamline, SimBeamlineOptions, truth_routes
from opmap.twin_truth import (
    TRUTH_API,
    TruthChannelError,
    map_truth,
    truth_from_npz,
    truth_to_npz,
)

GEOMETRY = {
    "z_start_um": -3.0, "z_step_um": 1.0, "z_count": 5,
    "x_start_um": 200.0, "x_stop_um": 332.0, "x_count": 4,
}  # fmt: skip


@pytest.fixture(scope="module")
def sim_beamline(tmp_path_factory) -> SimBeamline:
    """The child's beamline object (twin, clocks), built as ``opmap sim-beamline`` builds it;
    no server runs. The cell clock runs 1000 × wall time."""
    options = SimBeamlineOptions(data_dir=tmp_path_factory.mktemp("dcu"), speedup=1000.0)
    return SimBeamline.create(options)


@pytest.fixture(scope="module")
def channel(sim_beamline) -> TestClient:
    with TestClient(Starlette(routes=truth_routes(sim_beamline))) as client:
        yield client


def _assert_same(got: dict[str, LabelledArray], want: dict[str, LabelledArray]) -> None:
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        np.testing.assert_array_equal(got[name].values, array.values, err_msg=name)
        assert (got[name].dims, got[name].units) == (array.dims, array.units), name
        assert got[name].long_name == array.long_name, name


def test_the_channel_serves_map_truth_of_the_twin_exactly(sim_beamline, channel) -> None:
    body = {"map_geometry": GEOMETRY, "start_s": 20.0, "stop_s": 140.0, "previous_mid_s": None}
    response = channel.post(f"{TRUTH_API}/map", json=body)
    assert response.status_code == 200, response.text
    served = truth_from_npz(response.content)
    _assert_same(served, map_truth(sim_beamline.twin, GEOMETRY, 20.0, 140.0))
    # physics, not only plumbing: the cathode rows have the twin's lattice, the rows below
    # the cathode (z < 0) none; before any protocol there is no front and no plated Li
    c = served["c_perp"].values[0]
    assert c.shape == (5, 4) and np.isnan(c[:3]).all()
    assert np.all((c[3:] > 13.9) & (c[3:] < 14.6))  # LiCoO2 c, Å
    assert np.isnan(served["front_position"].values).all()
    np.testing.assert_array_equal(served["li_thickness"].values, 0.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"map_geometry": GEOMETRY, "start_s": 1.0}, "stop_s=None must be a finite number"),
        ({"map_geometry": GEOMETRY, "start_s": "a", "stop_s": 2.0}, "start_s='a' must be"),
        ({"map_geometry": GEOMETRY, "start_s": 0.0, "stop_s": 1e12}, "after the cell's now"),
        ({"map_geometry": {"z_count": 3}, "start_s": 0.0, "stop_s": 1.0}, "map_geometry lacks"),
        ({"map_geometry": GEOMETRY, "start_s": 5.0, "stop_s": 1.0}, "stop >= start"),
    ],
)
def test_a_bad_truth_request_is_refused_naming_the_field(channel, body, message) -> None:
    response = channel.post(f"{TRUTH_API}/map", json=body)
    assert response.status_code == 400
    assert message in response.text


def test_keep_from_holds_the_cell_the_rehearsal_still_needs(sim_beamline, channel) -> None:
    assert channel.put(f"{TRUTH_API}/keep_from", json={"value": "soon"}).status_code == 400
    assert channel.put(f"{TRUTH_API}/keep_from", json={"value": 42.5}).status_code == 200
    assert sim_beamline.truth_keep_from_s == 42.5


def test_npz_round_trip_keeps_nan_labels_and_integers() -> None:
    truth = {
        "c_perp": LabelledArray(np.array([[[np.nan, 14.2]]]), ("map", "z", "x"), "angstrom", "c"),
        "grains_new": LabelledArray(np.array([3]), ("map",), "", "true new grains"),
    }
    back = truth_from_npz(truth_to_npz(truth))
    _assert_same(back, truth)
    assert back["grains_new"].values.dtype.kind == "i"
    with pytest.raises(ValueError, match="no _labels"):
        buffer = __import__("io").BytesIO()
        np.savez(buffer, c=np.zeros(2))
        truth_from_npz(buffer.getvalue())


class _Child:
    """A network child as the rehearsal sees it: a truth source with a cell clock."""

    def __init__(self) -> None:
        self.cell_s = 0.0
        self.asked: list[tuple[float, float, float | None]] = []
        self.forgotten_before_s: list[float] = []

    def now_s(self) -> float:
        return self.cell_s

    def map_truth(self, geometry, start_s, stop_s, previous_mid_s):
        self.asked.append((start_s, stop_s, previous_mid_s))
        return {"x": LabelledArray(np.zeros(1), ("map",), "")}

    def forget_before(self, time_s: float) -> None:
        self.forgotten_before_s.append(time_s)


def _map_run(truth, child: _Child, uid: str, times_s: tuple[float, ...]) -> None:
    """A map run's documents, the child's cell clock at ``times_s`` for: start document,
    first ec_state event, a lines event, second ec_state event, stop document."""
    ec = {"uid": f"{uid}-ec", "name": "ec_state", "run_start": uid}
    lines = {"uid": f"{uid}-lines", "name": "lines", "run_start": uid}
    documents = [
        ("start", {"uid": uid, "map_geometry": GEOMETRY}),
        ("event", {"descriptor": ec["uid"]}),
        ("event", {"descriptor": lines["uid"]}),
        ("event", {"descriptor": ec["uid"]}),
        ("stop", {"run_start": uid}),
    ]
    truth.on_document("descriptor", ec)
    truth.on_document("descriptor", lines)
    for (name, doc), time_s in zip(documents, times_s, strict=True):
        child.cell_s = time_s
        truth.on_document(name, doc)


def test_over_the_network_a_map_lasts_from_its_first_ec_state_to_its_second() -> None:
    """Network control: no twin or clock here; the child's cell clock when the map's
    ec_state events arrive (its first line follows the first, its last precedes the
    second), not at its start and stop documents."""
    child = _Child()
    beamline = type("NetworkBeamline", (), {"twin": None, "clock": None})()
    truth = rehearse._TwinTruth(beamline, source=child, clock=child, at_ec_state=True)
    _map_run(truth, child, "map-0", (90.0, 100.0, 130.0, 160.0, 230.0))
    _map_run(truth, child, "map-1", (390.0, 400.0, 430.0, 470.0, 500.0))
    child.cell_s = 900.0  # the truths are asked for later: the noted times count
    truth({"uid": "map-0", "map_geometry": GEOMETRY}, 0)
    truth({"uid": "map-1", "map_geometry": GEOMETRY}, 1)
    assert child.asked == [(100.0, 160.0, None), (400.0, 470.0, 130.0)]
    # the child may forget only what no waiting truth needs: map-0 held it until answered
    margin = truth.HISTORY_MARGIN_S
    assert child.forgotten_before_s == [100.0 - margin] * 2 + [400.0 - margin] * 2


def test_the_channel_tells_the_cell_time(sim_beamline, channel) -> None:
    before_s = sim_beamline.time.cell.now_s()
    response = channel.get(f"{TRUTH_API}/now")
    assert response.status_code == 200
    assert before_s <= response.json()["value"] <= sim_beamline.time.cell.now_s()


def test_a_child_that_does_not_tell_the_time_costs_that_maps_truth_not_the_run(caplog) -> None:
    child = _Child()
    beamline = type("NetworkBeamline", (), {"twin": None, "clock": None})()
    truth = rehearse._TwinTruth(beamline, source=child, clock=child, at_ec_state=True)

    def refuse() -> float:
        raise TruthChannelError("truth channel http://127.0.0.1:1/...: ConnectError")

    child.now_s = refuse
    child.forget_before = lambda time_s: refuse()
    _map_run(truth, child, "map-0", (90.0, 100.0, 130.0, 160.0, 230.0))  # does not raise
    assert "run map-0: no cell time, so no truth for this map" in caplog.text
    truth.remember("map-old", 0, 10.0, 20.0)  # its hold cannot be sent either: no raise
    assert "the twin's history was not trimmed" in caplog.text
    with pytest.raises(RuntimeError, match="run map-0: its cell times were not noted"):
        truth({"uid": "map-0", "map_geometry": GEOMETRY}, 0)
    assert child.asked == []
