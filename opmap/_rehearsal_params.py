"""Analysis parameters that match a twin's configuration (its families; no x(c) law)."""

from __future__ import annotations

from opmap.analysis.families import FamilyConfig
from opmap.analysis.pipeline import AnalysisParameters
from opmap.twin import TwinConfig


def analysis_parameters_for_twin(config: TwinConfig, **overrides: object) -> AnalysisParameters:
    """The analysis set up for the twin's cell: its families' azimuths.

    In a real experiment these come from a families file; in a rehearsal the twin's own
    configuration is the sample description. x_Li uses the paper's calibration, never the
    twin's c(x) table.
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
    # No x(c) table from the twin: x_Li comes from the paper's calibration (LCO⊥ only), as
    # it would at the beamline; the twin's c(x) law is its own, not the analysis's.
    return AnalysisParameters(families=family_config, **overrides)
