"""Parameters of the twin's electrochemistry, with the paper's values as defaults.

One consistent set (the paper's figures are not all mutually consistent, see
docs/twin-electrochemistry.md): an electrochemically active area of 0.005 cm², so the
paper's 2 µA discharge is its stated 0.4 mA/cm²; 1.4 mAh/cm² from LiCoO2 to Li0.5CoO2
(137 mAh/g x 5.05 g/cm³ x 20 µm), i.e. 7.0 µAh for the cell. The 2 µA discharge is then
C/3.5 (the paper calls it "4C"); the 4.3 V charge starts near 1.3 mA/cm² (6.3 µA).
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._ocv import DEFAULT_OCV_V, DEFAULT_OCV_X, check_ocv_table

MAH_TO_C = 3.6


class ElectrochemConfig(BaseModel):
    """The LixCoO2 / LiPON / Li thin-film cell as seen by the potentiostat.

    Parameters
    ----------
    area_cm2
        Electrochemically active area (cm²). Default 0.005 cm² (2 µA = 0.4 mA/cm²).
    capacity_mah_per_cm2
        Areal capacity from x = 1 to x = 0.5 in LixCoO2 (mAh/cm²).
    cathode_thickness_um
        LiCoO2 thickness (µm).
    ocv_x, ocv_v
        OCV table: Li fraction x (strictly increasing) and open-circuit potential vs Li (V,
        strictly decreasing); interpolated monotonically (PCHIP).
    ohmic_resistance_ohm_cm2
        Area-specific ohmic resistance (Ω·cm²): LiPON, contacts.
    exchange_current_a_per_cm2
        Butler–Volmer exchange current density i0 (A/cm²) of the cathode/LiPON interface.
        ``None`` (default) derives it so that a constant-voltage charge at
        ``reference_charge_potential_v`` drives the biphasic front at ``front_speed_nm_per_s``.
    temperature_k
        Cell temperature (K); sets the Butler–Volmer scale 2RT/F.
    x_poor_eq, x_rich_eq
        Miscibility gap of LixCoO2 (Li-poor metallic and Li-rich insulating boundaries).
    front_speed_nm_per_s
        Speed of the biphasic front (nm/s) during the reference constant-voltage charge.
    interface_width_um
        10–90 % width (µm) of the Li-rich phase fraction across the moving front; sets the
        effective diffusivity of the two-phase mixture.
    gap_diffusivity_contrast
        Ratio D(rich fraction 0) / D(rich fraction 1) of the two-phase mixture (ln D linear
        in the rich fraction): Li crosses a mostly Li-poor (metallic) mixture much faster
        than a mostly Li-rich (insulating) one.
    lithiation_gap_diffusivity_um2_per_s
        Diffusivity (µm²/s) across the two-phase mixture when Li moves into the bulk (on
        discharge, and as a Li-rich surface layer relaxes at rest): the insulating Li-rich
        phase forms shells that Li must cross. Sets the thickness of the Li-rich surface
        layer at the end of a fast discharge and how fast it disappears at rest.
    reference_charge_potential_v
        Charge potential (V) at which ``front_speed_nm_per_s`` holds.
    diffusivity_poor_um2_per_s
        Chemical diffusivity of Li in the Li-poor solid solution (µm²/s; 1 µm²/s = 1e-8
        cm²/s). Fast: no depth gradient during the solid-solution charge.
    diffusivity_rich_um2_per_s
        Chemical diffusivity in the Li-rich insulating phase (µm²/s). Very slow.
    min_active_fraction
        Floor of the Li-poor surface fraction available for Li insertion (keeps the
        Butler–Volmer overpotential finite when the surface is fully Li-rich).
    n_cells
        Finite volumes across the cathode thickness.
    max_step_s
        Largest internal time step (s).
    li_molar_volume_cm3_per_mol
        Molar volume of Li metal (cm³/mol), for the plated thickness.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    area_cm2: float = Field(0.005, gt=0, le=10)
    capacity_mah_per_cm2: float = Field(1.4, gt=0, le=100)
    cathode_thickness_um: float = Field(20.0, gt=0, le=1000)
    ocv_x: tuple[float, ...] = DEFAULT_OCV_X
    ocv_v: tuple[float, ...] = DEFAULT_OCV_V
    ohmic_resistance_ohm_cm2: float = Field(50.0, ge=0, le=1e5)
    exchange_current_a_per_cm2: float | None = Field(None, gt=0, le=1.0)
    temperature_k: float = Field(298.15, gt=200, le=400)
    x_poor_eq: float = Field(0.75, gt=0, lt=1)
    x_rich_eq: float = Field(0.94, gt=0, lt=1)
    front_speed_nm_per_s: float = Field(10.0, gt=0, le=1000)
    interface_width_um: float = Field(6.0, gt=0, le=100)
    gap_diffusivity_contrast: float = Field(100.0, ge=1, le=1e6)
    lithiation_gap_diffusivity_um2_per_s: float = Field(0.017, gt=0, le=1e4)
    lithiation_slowdown_dx: float = Field(0.3, gt=0.002, lt=0.5)
    reference_charge_potential_v: float = Field(4.3, gt=3.0, le=5.0)
    diffusivity_poor_um2_per_s: float = Field(2.0, gt=0, le=1e4)
    diffusivity_rich_um2_per_s: float = Field(1e-3, gt=0, le=1e4)
    min_active_fraction: float = Field(1e-9, gt=0, lt=1)
    n_cells: int = Field(80, ge=10, le=2000)
    max_step_s: float = Field(2.0, gt=0, le=60)
    li_molar_volume_cm3_per_mol: float = Field(13.0, gt=0, le=100)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_ocv_table(self.ocv_x, self.ocv_v)
        if not self.x_poor_eq < self.x_rich_eq:
            raise ValueError(
                f"x_poor_eq={self.x_poor_eq} must be below x_rich_eq={self.x_rich_eq}"
            )
        if not (self.ocv_x[0] < self.x_poor_eq and self.x_rich_eq < self.ocv_x[-1]):
            raise ValueError(
                f"the OCV table x range [{self.ocv_x[0]}, {self.ocv_x[-1]}] must contain the "
                f"miscibility gap [{self.x_poor_eq}, {self.x_rich_eq}]"
            )
        return self

    @property
    def charge_per_x_c_per_cm2(self) -> float:
        """Areal charge (C/cm²) per unit change of x over the whole cathode thickness."""
        return self.capacity_mah_per_cm2 * MAH_TO_C / 0.5

    @property
    def capacity_c(self) -> float:
        """Cell capacity (C) from x = 1 to x = 0.5."""
        return self.capacity_mah_per_cm2 * MAH_TO_C * self.area_cm2
