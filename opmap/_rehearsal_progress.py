"""One status line per map line during a rehearsal: experiment time, step, voltage, map n/N."""

from __future__ import annotations

import sys
from typing import Any, TextIO


def _reading(data: dict[str, Any], suffix: str) -> Any:
    """The value of the first data key ending with ``suffix`` (device names vary)."""
    for key, value in data.items():
        if key.endswith(suffix):
            return value
    return None


class RehearsalProgress:
    """Document callback printing progress of an operando experiment.

    Parameters
    ----------
    n_maps
        Maps expected (for "map n/N"); None when unknown.
    stream
        Where to print; a terminal gets one rewritten line, a file one line per map.
    resumable
        Whether ``opmap resume`` can go on with the experiment (not in network control).
    """

    def __init__(
        self, n_maps: int | None, *, stream: TextIO | None = None, resumable: bool = True
    ) -> None:
        self.n_maps = n_maps
        self.resumable = resumable
        self.stream = stream or sys.stdout
        self.map_index: int | None = None
        self.lines_done = 0
        self.n_lines = 0
        self.time_s = 0.0
        self.potential_v = float("nan")
        self.step = ""
        self._descriptors: dict[str, str] = {}
        self._experiment_id: str | None = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Consume one document."""
        if name == "start":
            self._announce(doc.get("experiment_id"))
            self.map_index = doc.get("map_index")
            self.n_lines = int((doc.get("map_shape") or [0, 0])[0])
            self.lines_done = 0
        elif name == "descriptor":
            self._descriptors[doc["uid"]] = doc.get("name", "")
        elif name == "event":
            self._event(self._descriptors.get(doc["descriptor"], ""), doc["data"])
        elif name == "stop" and self.map_index is not None:
            self._print(final=True)

    def _announce(self, experiment_id: str | None) -> None:
        """Name the experiment once: it is what ``opmap resume`` needs after a crash."""
        if experiment_id is None or experiment_id == self._experiment_id:
            return
        self._experiment_id = experiment_id
        hint = f" (after a crash: opmap resume {experiment_id})" if self.resumable else ""
        self.stream.write(f"experiment {experiment_id}{hint}\n")
        self.stream.flush()

    def _event(self, stream: str, data: dict[str, Any]) -> None:
        if "line_index" in data:
            self.lines_done += 1
            self._print(final=False)
            return
        potential = _reading(data, "potential_v")
        if potential is None:
            potential = _reading(data, "potential")
        if potential is not None:
            self.potential_v = float(potential)
        elapsed = _reading(data, "time_s")
        if elapsed is None:
            elapsed = _reading(data, "elapsed")
        if elapsed is not None:
            self.time_s = float(elapsed)
        label = _reading(data, "step_label")
        if label:
            self.step = str(label)

    def status(self) -> str:
        """The current status line."""
        hours, rest = divmod(int(self.time_s), 3600)
        minutes, seconds = divmod(rest, 60)
        total = "?" if self.n_maps is None else str(self.n_maps)
        shown = "-" if self.map_index is None else str(self.map_index + 1)
        return (
            f"t = {hours:d}:{minutes:02d}:{seconds:02d}  step: {self.step or '-':<22s} "
            f"U = {self.potential_v:5.3f} V  map {shown}/{total}  "
            f"line {self.lines_done}/{self.n_lines}"
        )

    def _print(self, *, final: bool) -> None:
        if self.stream.isatty():
            end = "\n" if final else ""
            self.stream.write("\r" + self.status() + end)
            self.stream.flush()
        elif final:
            self.stream.write(self.status() + "\n")
            self.stream.flush()
