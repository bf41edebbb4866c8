"""The cell: layer geometry, LiCoO2 orientation families and the Li grain population."""

from ._families import (
    CathodeState,
    FamilyPopulation,
    MapFields,
    cathode_state,
    lattice_angstrom,
    orientation_family,
)
from ._geometry import CellGeometry
from ._grains import CLASS_NAMES, GrainPopulation, TruthGrains

__all__ = [
    "CLASS_NAMES",
    "CathodeState",
    "CellGeometry",
    "FamilyPopulation",
    "GrainPopulation",
    "MapFields",
    "TruthGrains",
    "cathode_state",
    "lattice_angstrom",
    "orientation_family",
]
