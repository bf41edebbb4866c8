"""Simulated backends of the opmap devices, on one shared simulation clock."""

from ._beam import BeamTrip, SimBeamMonitor
from ._clock import ClockMode, SimClock
from ._eiger import (
    FrameRenderer,
    PositionSource,
    SceneSource,
    SimEiger,
    metadata_from_integrator,
)
from ._eiger_writer import DectrisWriter
from ._potentiostat import (
    ElectrochemModel,
    SimPotentiostat,
    SimPotentiostatDriver,
)
from ._stage import SimAxis, SimMapStage, Trajectory

__all__ = [
    "BeamTrip",
    "ClockMode",
    "DectrisWriter",
    "ElectrochemModel",
    "FrameRenderer",
    "PositionSource",
    "SceneSource",
    "SimAxis",
    "SimBeamMonitor",
    "SimClock",
    "SimEiger",
    "SimMapStage",
    "SimPotentiostat",
    "SimPotentiostatDriver",
    "Trajectory",
    "metadata_from_integrator",
]
