"""Turn a calibrant run into a PONI: read its frame, calibrate, save, record the quality.

`CalibrationCallback` subscribes to the document stream. For a run whose start document
names a ``calibrant`` (the `opmap.plans.calibrate` plan writes it), it reads the frame the
run announced, refines the detector geometry from the ``start_poni`` of the start document
with `opmap.analysis.calibration.calibrate_geometry` (which rejects fits that assigned the wrong
rings), writes ``<run uid>.poni`` into its folder and keeps the result. When a Tiled run
node is available it also stores the PONI text and the quality figures in that run's
metadata under ``calibration``, so they travel with the raw data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opmap.analysis.calibration import CalibrationResult, calibrate_geometry
from opmap.analysis.geometry import load_poni, save_poni

from .frames import FrameReader

__all__ = ["CalibrationCallback", "CalibrationRecord"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationRecord:
    """The outcome of one calibrant run."""

    run_uid: str
    calibrant: str
    poni_path: Path | None
    result: CalibrationResult

    def summary(self) -> dict[str, Any]:
        """JSON-ready quality figures, as stored with the run."""
        geometry = self.result.geometry
        return {
            "calibrant": self.calibrant,
            "accepted": self.result.accepted,
            "reason": self.result.reason,
            "residual_2theta_deg": float(self.result.residual_2theta_deg),
            "rings_used": [int(r) for r in self.result.rings_used],
            "n_control_points": int(self.result.n_control_points),
            "distance_m": float(geometry.distance_m),
            "poni1_m": float(geometry.poni1_m),
            "poni2_m": float(geometry.poni2_m),
            "poni_file": str(self.poni_path) if self.poni_path else None,
        }


class CalibrationCallback:
    """Calibrate from every calibrant run seen in the document stream.

    Parameters
    ----------
    poni_dir
        Folder for the refined PONI files (one per accepted run, named by run uid).
    detector_key
        Data key of the detector frames.
    run_node
        ``run_node(uid)`` returns the run's Tiled node (to store the result in its metadata);
        None to skip.
    """

    def __init__(
        self,
        poni_dir: Path,
        *,
        detector_key: str = "eiger",
        run_node: Callable[[str], Any] | None = None,
    ) -> None:
        self.poni_dir = Path(poni_dir)
        self.detector_key = detector_key
        self.run_node = run_node
        self.records: list[CalibrationRecord] = []
        self._start: dict[str, Any] | None = None
        self._frames: list[np.ndarray] = []
        self._reader = FrameReader(data_keys=[detector_key])

    @property
    def latest(self) -> CalibrationRecord | None:
        """The most recent accepted calibration, if any."""
        accepted = [r for r in self.records if r.result.accepted]
        return accepted[-1] if accepted else None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Consume one document."""
        if name == "start":
            self._start = doc if "calibrant" in doc else None
            self._frames = []
            self._reader = FrameReader(data_keys=[self.detector_key])
        elif self._start is None:
            return
        elif name in ("stream_resource", "stream_datum"):
            batch = self._reader(name, doc)
            if batch is not None:
                self._frames.append(batch.values)
        elif name == "stop":
            start, self._start = self._start, None
            if doc.get("exit_status") == "success":
                self._calibrate(start)

    def _calibrate(self, start: dict[str, Any]) -> None:
        if not self._frames:
            raise ValueError(
                f"calibrant run {start['uid']} announced no {self.detector_key} frame"
            )
        image = np.concatenate(self._frames)[0]
        guess = load_poni(start["start_poni"], expected_shape=image.shape)
        result = calibrate_geometry(image, guess, calibrant=start["calibrant"], strict=False)
        poni_path = None
        if result.accepted:
            self.poni_dir.mkdir(parents=True, exist_ok=True)
            poni_path = save_poni(result.geometry, self.poni_dir / f"{start['uid']}.poni")
        record = CalibrationRecord(start["uid"], start["calibrant"], poni_path, result)
        self.records.append(record)
        log = logger.info if result.accepted else logger.error
        log("Calibration from run %s: %s", start["uid"], record.summary())
        if self.run_node is not None:
            summary = record.summary()
            if poni_path is not None:
                summary["poni"] = poni_path.read_text()
            self.run_node(start["uid"]).update_metadata({"calibration": summary})
