"""The digital twin of the thin-film LiCoO2 / LiPON / Li cell (pure numpy, no control system).

`CellTwin` answers "what does the beam see" at any experiment time: the electrochemistry
(`opmap.twin.electrochem`), the cell's layers, orientation families and Li grains
(`opmap.twin.cell`), and their ground truth (`MapTruth`). `DiffractionRenderer`
(`opmap.twin.forward`) turns a `BeamScene` into detector counts. The simulated devices of
`opmap.devices.sim` drive it; the analysis never imports it.
"""

from ._config import FamiliesConfig, FamilyModelConfig, GeometryConfig, LithiumConfig, TwinConfig
from ._scene import LAYERS, BeamScene, FamilyTexture, LcoPhase, LiSpot
from ._truth import MapTruth
from ._twin import CellTwin, beam_x_fraction
from .cell import TruthGrains
from .electrochem import CellElectrochemistry, ElectrochemState, SampledElectrochemistry
from .forward import DetectorMask, DiffractionConfig, DiffractionRenderer

__all__ = [
    "LAYERS",
    "BeamScene",
    "CellElectrochemistry",
    "CellTwin",
    "DetectorMask",
    "DiffractionConfig",
    "DiffractionRenderer",
    "ElectrochemState",
    "FamiliesConfig",
    "FamilyModelConfig",
    "FamilyTexture",
    "GeometryConfig",
    "LcoPhase",
    "LiSpot",
    "LithiumConfig",
    "MapTruth",
    "SampledElectrochemistry",
    "TruthGrains",
    "TwinConfig",
    "beam_x_fraction",
]
