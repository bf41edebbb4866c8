"""Beam-current monitor and shutter, the inputs of the RunEngine's suspenders.

`BeamMonitor` is the real device on EPICS PVs: the storage-ring current (mA) and the
experiment shutter. Suspenders watch ``beam_current_ma`` (e.g. ``SuspendFloor``) and the
shutter readback. A read whose PV does not answer raises `DeviceUnreachableError` naming the
device and the PV.
"""

from __future__ import annotations

from bluesky.protocols import Reading
from ophyd_async.core import StandardReadable, StrictEnum
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw

from ._unreachable import answered

__all__ = ["BeamMonitor", "ShutterState"]


class ShutterState(StrictEnum):
    """Experiment shutter position."""

    OPEN = "Open"
    CLOSED = "Closed"


class BeamMonitor(StandardReadable):
    """Ring current and shutter.

    Parameters
    ----------
    current_pv
        PV of the ring current in mA.
    shutter_prefix
        Prefix of the shutter: ``{prefix}Pos-Sts`` readback, ``{prefix}Cmd`` command.
    name
        Device name.
    """

    def __init__(self, current_pv: str, shutter_prefix: str, name: str = "") -> None:
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.beam_current_ma = epics_signal_r(float, current_pv)
        with self.add_children_as_readables():
            self.shutter = epics_signal_rw(
                ShutterState, f"{shutter_prefix}Pos-Sts", f"{shutter_prefix}Cmd"
            )
        super().__init__(name=name)

    async def read(self) -> dict[str, Reading]:
        """The readings; `DeviceUnreachableError` naming the device and the PV if its IOC
        does not answer."""
        ioc = "the IOC of the ring current and the shutter"
        return await answered(self.name or "beam monitor", "read", super().read(), ioc=ioc)
