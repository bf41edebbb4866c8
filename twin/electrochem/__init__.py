"""The cell's electrochemistry: OCV, kinetics, the cathode's Li field, a step table driving it."""

from ._cathode import CathodeField, LiProfile, split_phases
from ._config import MAH_TO_C, ElectrochemConfig
from ._kinetics import (
    FARADAY_C_PER_MOL,
    exchange_current_for,
    overpotential_v,
    solve_current_a_per_cm2,
    tafel_scale_v,
)
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
    "exchange_current_for",
    "gap_diffusivity_um2_per_s",
    "overpotential_v",
    "solve_current_a_per_cm2",
    "split_phases",
    "tafel_scale_v",
]
