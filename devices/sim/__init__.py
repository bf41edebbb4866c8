"""Simulated backends of the opmap devices, on one shared simulation clock.

They speak the real device API (`opmap.devices`) and drive the digital twin (`opmap.twin`)
through its public API; real-hardware modules never import this package.
"""

from ._beam import BeamTrip, SimBeamMonitor
from ._clock import ClockMode, SharedTime, SimClock
from ._eiger import (
    CellTimeScene,
    FrameRenderer,
    PositionSource,
    SceneSource,
    SimEiger,
    metadata_from_integrator,
)
from ._eiger_writer import DectrisWriter
from ._potentiostat import (
    SimPotentiostat,
    SimPotentiostatDriver,
)
from ._sample import SamplePosition, SampleSwitchRenderer, SimSampleChanger
from ._stage import SimAxis, SimMapStage, Trajectory

__all__ = [
    "BeamTrip",
    "CellTimeScene",
    "ClockMode",
    "DectrisWriter",
    "FrameRenderer",
    "PositionSource",
    "SamplePosition",
    "SampleSwitchRenderer",
    "SceneSource",
    "SharedTime",
    "SimAxis",
    "SimBeamMonitor",
    "SimClock",
    "SimEiger",
    "SimMapStage",
    "SimPotentiostat",
    "SimPotentiostatDriver",
    "SimSampleChanger",
    "Trajectory",
    "metadata_from_integrator",
]
