"""Fixtures for plan tests: one RunEngine, ophyd-async sim devices, a potentiostat double."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from event_model import schema_validators, unpack_event_page
from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices
from ophyd_async.sim import SimBlobDetector, SimMotor

from opmap.plans import MapGeometry

from ._doubles import FakePotentiostat

SMALL_MAP = MapGeometry(
    z_start_um=2.0, z_step_um=1.0, z_count=3, x_stop_um=50.0, x_count=5, exposure_s=0.01
)


class DocumentLog:
    """Collects (name, doc) pairs and validates each against the event-model schema."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict]] = []

    def __call__(self, name: str, doc: dict) -> None:
        schema_validators[_doc_type(name)].validate(doc)
        self.docs.append((name, doc))

    def of(self, name: str) -> list[dict]:
        return [doc for n, doc in self.docs if n == name]

    def _descriptors(self, run_uid: str | None) -> dict[str, str]:
        return {
            d["uid"]: d["name"]
            for d in self.of("descriptor")
            if run_uid is None or d["run_start"] == run_uid
        }

    def events_by_stream(self, run_uid: str | None = None) -> dict[str, list[dict]]:
        """Events (event pages unpacked) of one run, or all runs, by stream name."""
        streams = self._descriptors(run_uid)
        out: dict[str, list[dict]] = defaultdict(list)
        for doc in self.of("event"):
            if doc["descriptor"] in streams:
                out[streams[doc["descriptor"]]].append(doc)
        for page in self.of("event_page"):
            if page["descriptor"] in streams:
                out[streams[page["descriptor"]]].extend(unpack_event_page(page))
        return out

    def frames_announced(self, run_uid: str) -> int:
        """Frames of the detector image key announced by stream_datum in one run."""
        resources = {
            d["uid"]
            for d in self.of("stream_resource")
            if d["run_start"] == run_uid and d["data_key"] == "det"
        }
        return sum(
            d["indices"]["stop"] - d["indices"]["start"]
            for d in self.of("stream_datum")
            if d["stream_resource"] in resources
        )

    def ec_times(self) -> list[float]:
        """The potentiostat's time_s over every run, in emission order."""
        events = self.events_by_stream()["electrochemistry"]
        return [e["data"]["potentiostat_time_s"] for e in events]


def _doc_type(name: str):
    from event_model import DocumentNames

    return DocumentNames[name]


@pytest.fixture
def docs(RE) -> DocumentLog:
    log = DocumentLog()
    RE.subscribe(log)
    return log


@pytest.fixture
def devices(RE, tmp_path: Path):
    path_provider = StaticPathProvider(UUIDFilenameProvider(), tmp_path)
    with init_devices():
        det = SimBlobDetector(path_provider)  # named 'det' by init_devices
        stage_x = SimMotor(instant=False, units="um")
        stage_z = SimMotor(units="um")
        potentiostat = FakePotentiostat()
    RE(_configure_x(stage_x))
    return det, stage_x, stage_z, potentiostat


def _configure_x(stage_x: SimMotor):
    import bluesky.plan_stubs as bps

    yield from bps.mv(stage_x.acceleration_time, 0.01)
