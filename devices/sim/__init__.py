"""Simulated backends of the opmap devices, on one shared simulation clock.

They speak the real device API (`opmap.devices`) and drive the digital twin (`opmap.twin`)
through its public API; real-hardware modules never import this package.
"""

from ._beam import BeamTrip, SimBeamMonitor
from ._clock import ClockMode, SimClock
from ._detector import eiger4m_geometry, load_poni, save_poni
from ._eiger import (
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
from ._sample import SampleSwitchRenderer, SimSampleChanger
from ._stage import SimAxis, SimMapStage, Trajectory

__all__ = [
    "BeamTrip",
    "ClockMode",
    "DectrisWriter",
    "FrameRenderer",
    "PositionSource",
    "SampleSwitchRenderer",
    "SceneSource",
    "SimAxis",
    "SimBeamMonitor",
    "SimClock",
    "SimEiger",
    "SimMapStage",
    "SimPotentiostat",
    "SimPotentiostatDriver",
    "SimSampleChanger",
    "Trajectory",
    "eiger4m_geometry",
    "load_poni",
    "metadata_from_integrator",
    "save_poni",
]
