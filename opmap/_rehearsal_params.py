"""Analysis parameters that match a twin's configuration (families and the x(c) law)."""

from __future__ import annotations

from opmap.analysis.families import FamilyConfig
from opmap.analysis.pipeline import AnalysisParameters, CalibrationTable
from opmap.twin import TwinConfig


def analysis_parameters_for_twin(config: TwinConfig, **overrides: object) -> AnalysisParameters:
    """The analysis set up for the twin's cell: its families' azimuths and c(x) tables.

    In a real experiment these come from a families file and the paper's calibration; in a
    rehearsal the twin's own configuration is the sample description.
    """
    families = {"perp": config.families.perp, "par": config.families.par}
    family_config = FamilyConfig.model_validate(
        {
            "family": [
                {
                    "name": family.name,
                    "azimuths_003_deg": list(family.azimuths_003_deg),
                    "azimuths_110_deg": list(family.azimuths_110_deg),
                }
                for name, family in families.items()
            ]
        }
    )
    tables = {}
    for name, family in families.items():
        points = sorted((c, x) for x, c in family.c_angstrom_vs_x_li)
        tables[name] = CalibrationTable(
            c_angstrom=[c for c, _ in points], x_li=[x for _, x in points]
        )
    return AnalysisParameters(families=family_config, calibration=tables, **overrides)
