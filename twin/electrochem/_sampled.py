"""One cell electrochemistry shared by several simulated devices, sampled on a fixed grid.

The potentiostat and the detector both drive the twin's electrochemistry forward to the
simulation clock's time (the potentiostat when read or collected, the Eiger when it renders
a frame at mid-exposure). The model only moves forward, so the potentiostat's samples are
taken here, on the way: every advance passes through each multiple of ``sample_interval_s``
and hands the exact state there to the observers, whoever asked for the advance. The
potentiostat's buffer therefore has no gaps, and no driver ever has to step the model back.
Nothing is kept here: a day-long experiment has 86 400 samples, and each observer keeps only
what it still needs (the simulated potentiostat until it is drained).

Observers (`SampledElectrochemistry.add_observer`) are called at each sample with the model
exactly at the sample time, whoever drove it there: the twin keeps its snapshots of the Li
field from them, so what it shows at a time does not depend on which driver got there first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from ._model import ElectrochemState
from ._steps import SafetyLimits, StepSequence


class ElectrochemModel(Protocol):
    """What the wrapper needs of the model (`CellElectrochemistry` or a test double)."""

    def start_protocol(self, protocol: StepSequence, window: SafetyLimits) -> None: ...
    def stop_protocol(self) -> None: ...
    def advance_to(self, time_s: float) -> None: ...
    @property
    def state(self) -> ElectrochemState: ...


class SampledElectrochemistry:
    """`CellElectrochemistry` behind a forward-only advance that records samples.

    Parameters
    ----------
    model
        The electrochemistry being driven.
    sample_interval_s
        Sampling period of the buffer (s of experiment time, > 0).

    Other attributes (``state``, ``profile()``, ``start_protocol`` ...) are the model's.
    """

    def __init__(self, model: ElectrochemModel, *, sample_interval_s: float = 1.0) -> None:
        if not (math.isfinite(sample_interval_s) and sample_interval_s > 0):
            raise ValueError(f"sample_interval_s={sample_interval_s} must be a finite time > 0 s")
        self.model = model
        self.sample_interval_s = sample_interval_s
        self._observers: list[Callable[[ElectrochemState], Any]] = []
        self._next_index = math.ceil(model.state.time_s / sample_interval_s - 1e-9)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def add_observer(self, observer: Callable[[ElectrochemState], Any]) -> None:
        """Call ``observer(state)`` at every later sample, the model at the sample's time.

        Parameters
        ----------
        observer
            Called with the sample's `ElectrochemState`; it may read the wrapped model
            (``profile()``, ``plated_li_thickness_um()``), which is exactly at that time.
        """
        self._observers.append(observer)

    @property
    def time_s(self) -> float:
        """Experiment time of the model (s)."""
        return self.model.state.time_s

    def advance_to(self, time_s: float) -> None:
        """Advance to ``time_s`` (or stay, if another driver already went further)."""
        if not math.isfinite(time_s):
            raise ValueError(f"time_s={time_s} must be finite")
        target_s = max(time_s, self.time_s)
        while self._next_index * self.sample_interval_s <= target_s:
            self.model.advance_to(self._next_index * self.sample_interval_s)
            state = self.model.state
            for observer in self._observers:
                observer(state)
            self._next_index += 1
        self.model.advance_to(target_s)
