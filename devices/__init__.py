"""opmap devices: the real-hardware API (simulated backends live in `opmap.devices.sim`)."""

from ._eiger_layout import (
    BITSHUFFLE_FILTER_ID,
    DECTRIS_LINKS_MIMETYPE,
    TIME_PATH,
    X_PATH,
    EigerMetadata,
    dectris_links_parameters,
)
from ._step_table import (
    ProtocolError,
    ProtocolStep,
    SafetyWindow,
    StepTable,
    Technique,
    paper_protocol,
)
from ._unreachable import DeviceUnreachableError
from .beam import BeamMonitor, ShutterState
from .eiger import Eiger, EigerDriverIO, EigerTriggerMode
from .epics_potentiostat import EpicsPotentiostatDriver, epics_potentiostat
from .potentiostat import (
    STREAM_NAME,
    Potentiostat,
    PotentiostatDriver,
    PotentiostatSample,
    PotentiostatState,
    PotentiostatStatus,
)
from .stage import AxisUnreachableError, LimitedMotor, MapStage, SoftLimitError, SoftLimits

__all__ = [
    "BITSHUFFLE_FILTER_ID",
    "DECTRIS_LINKS_MIMETYPE",
    "STREAM_NAME",
    "TIME_PATH",
    "X_PATH",
    "AxisUnreachableError",
    "BeamMonitor",
    "DeviceUnreachableError",
    "Eiger",
    "EigerDriverIO",
    "EigerMetadata",
    "EigerTriggerMode",
    "EpicsPotentiostatDriver",
    "LimitedMotor",
    "MapStage",
    "Potentiostat",
    "PotentiostatDriver",
    "PotentiostatSample",
    "PotentiostatState",
    "PotentiostatStatus",
    "ProtocolError",
    "ProtocolStep",
    "SafetyWindow",
    "ShutterState",
    "SoftLimitError",
    "SoftLimits",
    "StepTable",
    "Technique",
    "dectris_links_parameters",
    "epics_potentiostat",
    "paper_protocol",
]
