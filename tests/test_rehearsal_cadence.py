"""The rehearsal's default cadence puts the twin's biphasic front in >= 5 maps (issue 10); its
clock option."""

from __future__ import annotations

import numpy as np
import pytest

from opmap.devices import SafetyWindow, paper_protocol
from opmap.plans import MapCadence
from opmap.rehearse import PAPER_MAP_SCHEDULE, RehearsalOptions, map_cadence
from opmap.twin import CellTwin, TwinConfig

#: Experiment time of one default 49 x 49 map (49 lines of 2.45 s of frames plus moves).
MAP_DURATION_S = 155.0


def _front_in_cathode(twin: CellTwin, time_s: float) -> bool:
    """Whether the Li-rich fraction crosses 1/2 inside the cathode at ``time_s``."""
    z_um = np.arange(0.5, 20.0, 1.0)
    truth = twin.truth(z_um=z_um, x_um=np.array([500.0, 533.0]), time_s=time_s)
    rich = truth.rich_fraction[:, 0]
    return bool((rich > 0.5).any() and (rich < 0.5).any())


def test_the_default_schedule_maps_the_front_crossing_the_cathode_at_least_five_times():
    twin = CellTwin(TwinConfig())
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    cadence = map_cadence(RehearsalOptions())
    assert cadence == MapCadence(PAPER_MAP_SCHEDULE)
    starts_s = [t for t in cadence.starts_s(3000.0, MAP_DURATION_S)]
    mids_s = [t + MAP_DURATION_S / 2 for t in starts_s]
    seen = [_front_in_cathode(twin, t) for t in mids_s]
    assert sum(seen) >= 5, list(zip(starts_s, seen, strict=True))
    # and the former uniform 660 s cadence did not
    twin = CellTwin(TwinConfig())
    twin.electrochemistry.start_protocol(paper_protocol(), SafetyWindow())
    uniform = MapCadence.every(660.0).starts_s(3000.0, MAP_DURATION_S)
    assert sum(_front_in_cathode(twin, t + MAP_DURATION_S / 2) for t in uniform) < 5


def test_the_rehearsal_clock_is_checked_and_network_control_is_always_wall_time():
    assert not RehearsalOptions().wall_clock
    assert RehearsalOptions(clock="wall").wall_clock
    assert RehearsalOptions(control="network").wall_clock
    with pytest.raises(ValueError, match="clock='real'"):
        RehearsalOptions(clock="real")
    with pytest.raises(ValueError, match="clock='event' needs control='sim'"):
        RehearsalOptions(control="network", clock="event")
