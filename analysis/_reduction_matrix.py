"""Sparse projection matrices taken from pyFAI's own CSR engines.

For one sub-integration pyFAI builds a CSR matrix ``C`` (bins × pixels) whose
coefficient ``C[b, p]`` is the fraction of pixel ``p`` falling into bin ``b``
(pixel splitting), masked pixels already dropped.  Its ``integrate_ng`` returns,
with ``norm[p] = solid_angle[p] · polarisation[p]``,

    I[b] = Σ_p C[b, p] · frame[p] / Σ_p C[b, p] · norm[p]

so the numerator matrix ``C`` and the denominator matrix ``C · diag(norm)``
reproduce pyFAI exactly.  Several sub-integrations (the sectors of one family)
pool into one bin by summing their numerator and denominator rows.

2D (q, χ) sub-integrations (Li window, cake) come from `cake_matrix`: pyFAI's engine on a
q range padded by whole bins, so that every pixel reaching a kept bin is split by its true
area (see there why: issue 14).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from pyFAI import units

from .geometry import DetectorGeometry

__all__ = ["SubIntegration", "cake_matrix", "engine_matrix"]

_Q_UNIT = units.to_unit("q_A^-1")
_CHI_UNIT = units.to_unit("chi_deg")


class SubIntegration:
    """A numerator matrix ``C`` and its row sums weighted by ``norm`` (denominator).

    Attributes
    ----------
    numerator : scipy.sparse.csr_array
        float64, (n_bins, H·W).
    denominator : numpy.ndarray
        float64, (n_bins,), ``C @ norm``.
    """

    def __init__(self, numerator: sp.csr_array, norm: np.ndarray) -> None:
        self.numerator = numerator
        self.denominator = np.asarray(numerator @ norm, dtype=np.float64)

    def __add__(self, other: SubIntegration) -> SubIntegration:
        total = SubIntegration.__new__(SubIntegration)
        total.numerator = (self.numerator + other.numerator).tocsr()
        total.denominator = self.denominator + other.denominator
        return total


def _to_csr(engine, n_pixels: int) -> sp.csr_array:
    data, indices, indptr = engine.lut
    n_bins = len(indptr) - 1
    matrix = sp.csr_array(
        (np.asarray(data, np.float64), np.asarray(indices), np.asarray(indptr)),
        shape=(n_bins, n_pixels),
    )
    matrix.sum_duplicates()
    return matrix


def engine_matrix(
    geometry: DetectorGeometry,
    norm: np.ndarray,
    *,
    q_range: tuple[float, float],
    n_q: int,
    chi_range_deg: tuple[float, float] | None = None,
    n_chi: int | None = None,
    splitting: str = "full",
) -> SubIntegration:
    """Build one sub-integration with pyFAI's CSR engine.

    Parameters
    ----------
    geometry : DetectorGeometry
        Geometry and mask.
    norm : numpy.ndarray
        float64, (H·W,), solid angle × polarisation per pixel.
    q_range : (float, float)
        Radial range in Å⁻¹.
    n_q : int
        Radial bins.
    chi_range_deg : (float, float), optional
        pyFAI chi range in degrees within [-180, 180]; None = full azimuth.
    n_chi : int, optional
        Azimuthal bins for a 2D (cake) integration; rows are then ordered
        q-major like pyFAI's engine (row = i_q · n_chi + i_chi).
    splitting : str
        "full" or "bbox".

    Returns
    -------
    SubIntegration
    """
    ai = geometry.integrator
    shape = geometry.shape
    pos0 = tuple(q / _Q_UNIT.scale for q in q_range)
    pos1 = None if chi_range_deg is None else tuple(np.deg2rad(c) for c in chi_range_deg)
    npt: int | tuple[int, int] = n_q if n_chi is None else (n_q, n_chi)
    unit = _Q_UNIT if n_chi is None else (_Q_UNIT, _CHI_UNIT)
    engine = ai.setup_sparse_integrator(
        shape,
        npt,
        mask=geometry.effective_mask.astype(np.int8),
        pos0_range=pos0,
        pos1_range=pos1,
        mask_checksum=None,
        unit=unit,
        split=splitting,
        algo="CSR",
        scale=False,
    )
    return SubIntegration(_to_csr(engine, shape[0] * shape[1]), norm)


class _DropEmptyMatrixWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_EMPTY_MATRIX_MESSAGE)


#: pyFAI's warning for a sub-integration without any pixel ("... Expect errors or
#: non-sense results!"); opmap's callers check for empty sub-integrations themselves
#: (``reduction._require_pixels``: an error naming the sector, or, where allowed, a piece
#: of a sector that adds nothing).
_EMPTY_MATRIX_MESSAGE = "Sparse matrix is empty"
_PYFAI_SPARSE_LOGGER = "pyFAI.ext.sparse_builder"


@contextlib.contextmanager
def empty_matrix_checked_by_caller() -> Iterator[None]:
    """Silence pyFAI's empty-matrix warning while sub-integrations are built: for callers
    that check for empty ones themselves and say which sector it was."""
    logger = logging.getLogger(_PYFAI_SPARSE_LOGGER)
    dropped = _DropEmptyMatrixWarning()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


def pixel_q_extent(geometry: DetectorGeometry) -> float:
    """Largest radial extent of one pixel of ``geometry`` (Å⁻¹), from pyFAI's pixel corners."""
    corners = geometry.integrator.array_from_unit(
        geometry.shape, "corner", (_Q_UNIT, _CHI_UNIT), scale=False
    )
    q = corners[..., 0]
    return float(np.nanmax(q.max(axis=-1) - q.min(axis=-1))) * _Q_UNIT.scale


def cake_matrix(
    geometry: DetectorGeometry,
    norm: np.ndarray,
    *,
    q_range: tuple[float, float],
    n_q: int,
    n_chi: int,
    splitting: str = "full",
) -> SubIntegration:
    """2D sub-integration over the full circle, every pixel split by its true area.

    pyFAI's engines clamp the corners of a pixel that crosses the ends of the radial range
    onto them before splitting it: a pixel with only a sliver inside the range then counts
    with up to its whole area in the edge bins, and where the clamped polygon degenerates
    (almost no area inside) its split between χ bins is 0/0, garbage that changes with the
    thread and process that builds the engine (issue 14: two rehearsals of one seed had
    different Li windows, hence different grains). Here pyFAI's range is padded on both
    sides by whole bins, more than twice the largest radial extent of a pixel, and only the
    ``n_q`` requested bins are kept: no kept bin sees a clamped pixel, each pixel counts
    with the fraction of its area in the bin (the padded bins keep the bin edges).

    Parameters
    ----------
    geometry : DetectorGeometry
        Geometry and mask.
    norm : numpy.ndarray
        float64, (H·W,), solid angle × polarisation per pixel.
    q_range : (float, float)
        Radial range of the kept bins, Å⁻¹.
    n_q, n_chi : int
        Radial and azimuthal bins (χ over [-180°, 180°)).
    splitting : str
        "full" or "bbox".

    Returns
    -------
    SubIntegration
        Rows ordered q-major like pyFAI's engine (row = i_q · n_chi + i_chi).
    """
    q_min, q_max = q_range
    width = (q_max - q_min) / n_q
    pad = int(np.ceil(2.0 * pixel_q_extent(geometry) / width)) + 1
    sub = engine_matrix(  # pyFAI keeps a range starting below q = 0 as given
        geometry,
        norm,
        q_range=(q_min - pad * width, q_max + pad * width),
        n_q=n_q + 2 * pad,
        chi_range_deg=(-180.0, 180.0),
        n_chi=n_chi,
        splitting=splitting,
    )
    keep = np.arange(pad * n_chi, (pad + n_q) * n_chi)
    sub.numerator = sp.csr_array(sub.numerator[keep])
    sub.denominator = sub.denominator[keep]
    return sub
