"""Orientation families of the LiCoO2 film and their azimuthal sectors on the detector.

A textured LCO film diffracts (003) and (110) into spots at fixed azimuths; the
spots of one *orientation family* (e.g. LCO⊥, Li planes perpendicular to the
film, and LCO∥) are integrated together in sectors of ± ``sector_half_width_deg``
around each azimuth.  Sectors are configured in TOML::

    [[family]]
    name = "perp"
    azimuths_003_deg = [25, 160, 205, 345]
    azimuths_110_deg = [90]
    sector_half_width_deg = 10

    [[family]]
    name = "par"
    azimuths_003_deg = [90, 275]
    azimuths_110_deg = [210]

Azimuths use opmap's chi: pyFAI's chi in degrees modulo 360, in [0, 360).  A
sector may wrap through 0/360 (345 ± 20 covers 325–5).  Two sectors of the same
reflection must not overlap (a pixel would count twice, or for two families).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "REFLECTIONS",
    "ChiSector",
    "FamilyConfig",
    "OrientationFamily",
    "load_families",
]

Reflection = Literal["003", "110"]
#: Reflections with per-family sectors.
REFLECTIONS: tuple[Reflection, ...] = ("003", "110")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class ChiSector(BaseModel):
    """Azimuthal sector ``[start, start + width)`` in opmap chi (degrees, modulo 360).

    Examples
    --------
    >>> ChiSector(start_chi_deg=350.0, width_deg=20.0).contains(5.0)
    True
    >>> ChiSector(start_chi_deg=350.0, width_deg=20.0).to_pyfai_ranges_deg()
    ((-10.0, 10.0),)
    >>> ChiSector(start_chi_deg=170.0, width_deg=20.0).to_pyfai_ranges_deg()
    ((170.0, 180.0), (-180.0, -170.0))
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    start_chi_deg: float = Field(ge=0, lt=360)
    width_deg: float = Field(gt=0, le=180)

    @property
    def end_chi_deg(self) -> float:
        """End of the sector modulo 360, degrees."""
        return (self.start_chi_deg + self.width_deg) % 360.0

    def contains(self, chi_deg: float) -> bool:
        """Whether azimuth ``chi_deg`` (any real, degrees) lies in the sector."""
        return (chi_deg - self.start_chi_deg) % 360.0 < self.width_deg

    def overlaps(self, other: ChiSector) -> bool:
        """Whether two sectors share any azimuth (open overlap; touching is allowed)."""
        return (other.start_chi_deg - self.start_chi_deg) % 360.0 < self.width_deg or (
            self.start_chi_deg - other.start_chi_deg
        ) % 360.0 < other.width_deg

    def to_pyfai_ranges_deg(self) -> tuple[tuple[float, float], ...]:
        """The sector as pyFAI ``azimuth_range`` pieces, chi in [-180, 180] degrees.

        pyFAI's chi is discontinuous at ±180°, so a sector crossing 180 is split
        in two; one crossing 0/360 is a single range around 0.
        """
        start = self.start_chi_deg - 360.0 if self.start_chi_deg >= 180.0 else self.start_chi_deg
        end = start + self.width_deg
        if end <= 180.0:
            return ((start, end),)
        return ((start, 180.0), (-180.0, end - 360.0))


class OrientationFamily(BaseModel):
    """One orientation family: its (003) and (110) spot azimuths and sector half width."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    azimuths_003_deg: tuple[float, ...] = Field(min_length=1)
    azimuths_110_deg: tuple[float, ...] = ()
    sector_half_width_deg: float = Field(default=10.0, gt=0, le=90)

    @field_validator("name")
    @classmethod
    def _name_is_a_key(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"name must start with a letter and hold only letters, digits, '_' or '-' "
                f"(at most 32 characters), got {name!r}"
            )
        return name

    @field_validator("azimuths_003_deg", "azimuths_110_deg")
    @classmethod
    def _azimuths_in_range(cls, azimuths: tuple[float, ...]) -> tuple[float, ...]:
        for chi in azimuths:
            if not 0.0 <= chi < 360.0:
                raise ValueError(f"azimuths must lie in [0, 360) degrees, got {chi}")
        return azimuths

    def sectors(self, reflection: Reflection) -> tuple[ChiSector, ...]:
        """The ± half-width sectors around this family's azimuths of ``reflection``."""
        azimuths = self.azimuths_003_deg if reflection == "003" else self.azimuths_110_deg
        width = 2.0 * self.sector_half_width_deg
        return tuple(
            ChiSector(start_chi_deg=(chi - self.sector_half_width_deg) % 360.0, width_deg=width)
            for chi in azimuths
        )


class FamilyConfig(BaseModel):
    """All orientation families (TOML ``[[family]]`` tables); sectors never overlap.

    Examples
    --------
    >>> config = FamilyConfig.model_validate({"family": [
    ...     {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345], "azimuths_110_deg": [90]},
    ...     {"name": "par", "azimuths_003_deg": [90, 275], "azimuths_110_deg": [210]}]})
    >>> [f.name for f in config.family]
    ['perp', 'par']
    >>> config.family[0].sectors("110")[0].start_chi_deg
    80.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    family: tuple[OrientationFamily, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_unique_and_sectors_disjoint(self) -> FamilyConfig:
        names = [f.name for f in self.family]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"family names must be unique, repeated: {duplicates}")
        for reflection in REFLECTIONS:
            labelled = [(f.name, s) for f in self.family for s in f.sectors(reflection)]
            for i, (name_a, a) in enumerate(labelled):
                for name_b, b in labelled[i + 1 :]:
                    if a.overlaps(b):
                        raise ValueError(
                            f"({reflection}) sectors overlap: family {name_a!r} "
                            f"[{a.start_chi_deg:g}, {a.end_chi_deg:g}) deg and family "
                            f"{name_b!r} [{b.start_chi_deg:g}, {b.end_chi_deg:g}) deg; "
                            "reduce sector_half_width_deg or fix the azimuths"
                        )
        return self

    def __iter__(self) -> Iterator[OrientationFamily]:  # type: ignore[override]
        return iter(self.family)


def load_families(path: str | Path) -> FamilyConfig:
    """Read orientation families from a TOML file of ``[[family]]`` tables.

    Parameters
    ----------
    path : str or Path
        TOML file.

    Returns
    -------
    FamilyConfig

    Raises
    ------
    ValueError
        Invalid TOML (message names the file) or invalid fields (pydantic's
        ``ValidationError``, a ``ValueError``, names the field).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "families.toml"
    ...     _ = path.write_text('[[family]]\\nname = "par"\\nazimuths_003_deg = [90, 275]\\n')
    ...     config = load_families(path)
    >>> config.family[0].sector_half_width_deg
    10.0
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error
    return FamilyConfig.model_validate(data)
