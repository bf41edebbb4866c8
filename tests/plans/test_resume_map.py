"""fly_map(lines=...) and resume_fly_map on ophyd-async sim devices; a stored run as a fake."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from opmap.plans import MapResume, fly_map, map_line_sources, resume_fly_map

from .conftest import SMALL_MAP


class _StoredRun:
    """The parts of a Tiled BlueskyRun that MapResume reads, built from emitted documents."""

    def __init__(self, start: dict, lines: list[dict]) -> None:
        self.metadata = {"start": start}
        self._lines = lines

    def __contains__(self, key: object) -> bool:
        return key == "lines" and bool(self._lines)

    def __getitem__(self, key: str):
        columns = ("line_index", "line_first_frame", "line_n_frames")
        # xarray-like columns: ``table[name].values`` is an array
        table = {
            c: SimpleNamespace(values=np.array([e["data"][c] for e in self._lines]))
            for c in columns
        }
        return SimpleNamespace(read=lambda: table)


def _stored(docs, run_uid: str) -> _StoredRun:
    (start,) = [d for d in docs.of("start") if d["uid"] == run_uid]
    return _StoredRun(start, docs.events_by_stream(run_uid).get("lines", []))


def test_fly_map_flies_only_the_lines_asked_and_lists_them(RE, docs, devices):
    det, stage_x, stage_z, _ = devices
    result = RE(fly_map(det, stage_x, stage_z, SMALL_MAP, lines=[2, 0]))
    assert result.exit_status == "success"
    (start,) = docs.of("start")
    assert start["map_lines"] == [2, 0] and start["shape"] == [3, 5]  # the whole map's keys
    lines = docs.events_by_stream()["lines"]
    assert [e["data"]["line_index"] for e in lines] == [2, 0]
    assert [e["data"]["stage_z"] for e in lines] == [4.0, 2.0]
    assert [e["data"]["line_first_frame"] for e in lines] == [0, 5]


@pytest.mark.parametrize(
    ("lines", "match"),
    [([], "at least one line"), ([1, 1], "each once"), ([0, 3], r"\[3\] outside")],
)
def test_fly_map_refuses_bad_lines_naming_the_parameter(RE, devices, lines, match):
    det, stage_x, stage_z, _ = devices
    with pytest.raises(ValueError, match=match):
        RE(fly_map(det, stage_x, stage_z, SMALL_MAP, lines=lines))


def test_a_resume_flies_the_missing_lines_and_the_two_runs_hold_each_line_once(RE, docs, devices):
    det, stage_x, stage_z, _ = devices
    first = RE(fly_map(det, stage_x, stage_z, SMALL_MAP, lines=[0])).run_start_uids[0]
    failed = _stored(docs, first)
    # the whole map was asked (no map_lines), and the run ended after line 0
    failed.metadata["start"] = {
        k: v for k, v in failed.metadata["start"].items() if k != "map_lines"
    }
    resume = MapResume.from_run(failed)
    assert resume == MapResume(resumes=first, geometry=SMALL_MAP, lines=(1, 2))
    result = RE(resume_fly_map(det, stage_x, stage_z, resume, md={"map_index": 4}))
    second = result.run_start_uids[0]
    resumed = _stored(docs, second)
    start = resumed.metadata["start"]
    assert start["resumes"] == first and start["plan_name"] == "resume_fly_map"
    assert start["map_geometry"] == SMALL_MAP.model_dump() and start["map_index"] == 4
    sources = map_line_sources([failed, resumed])
    assert [(i, s.run_uid, s.first_frame) for i, s in sources.items()] == [
        (0, first, 0), (1, second, 0), (2, second, 5),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="every line was completed"):
        MapResume.from_run(resumed)
    with pytest.raises(ValueError, match="line 0 is held twice"):
        map_line_sources([failed, failed])
    with pytest.raises(ValueError, match=r"lines \[1, 2\] of the map are in no run"):
        map_line_sources([failed])


def test_a_resume_carries_the_failed_runs_experiment_and_map_index(RE, docs, devices):
    det, stage_x, stage_z, _ = devices
    md = {"experiment_id": "cell-7", "map_index": 3}
    first = RE(fly_map(det, stage_x, stage_z, SMALL_MAP, lines=[0], md=md)).run_start_uids[0]
    failed = _stored(docs, first)
    del failed.metadata["start"]["map_lines"]  # the whole map was asked; it ended after line 0
    resume = MapResume.from_run(failed)
    assert resume.carried == md
    second = RE(resume_fly_map(det, stage_x, stage_z, resume)).run_start_uids[0]
    start = _stored(docs, second).metadata["start"]
    assert (start["experiment_id"], start["map_index"], start["resumes"]) == ("cell-7", 3, first)
    # md= still adds or overrides keys
    third = RE(resume_fly_map(det, stage_x, stage_z, resume, md={"map_index": 4}))
    assert _stored(docs, third.run_start_uids[0]).metadata["start"]["map_index"] == 4
