"""The cell's electrochemistry: OCV, kinetics, the cathode's Li field, a step table driving it."""

from . import kinetics
from ._cathode import CathodeField, LiProfile, split_phases
from ._config import MAH_TO_C, ElectrochemConfig
from ._model import CellElectrochemistry, ElectrochemState, gap_diffusivity_um2_per_s
from ._ocv import OcvCurve
from ._sampled import ElectrochemModel, SampledElectrochemistry
from ._steps import (
    CONSTANT_CURRENT,
    CONSTANT_VOLTAGE,
    OPEN_CIRCUIT,
    ControlStep,
    SafetyLimits,
    StepSequence,
)
from .kinetics import FARADAY_C_PER_MOL

__all__ = [
    "CONSTANT_CURRENT",
    "CONSTANT_VOLTAGE",
    "FARADAY_C_PER_MOL",
    "MAH_TO_C",
    "OPEN_CIRCUIT",
    "CathodeField",
    "CellElectrochemistry",
    "ControlStep",
    "ElectrochemConfig",
    "ElectrochemModel",
    "ElectrochemState",
    "LiProfile",
    "OcvCurve",
    "SafetyLimits",
    "SampledElectrochemistry",
    "StepSequence",
    "gap_diffusivity_um2_per_s",
    "kinetics",
    "split_phases",
]
