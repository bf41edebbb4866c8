"""Targeted sparse reduction: every product of a frame in one sparse matrix product.

:func:`compile_reduction` turns a :class:`ReductionPlan` and a :class:`DetectorGeometry`
into a :class:`CompiledReduction`: the CSR matrices of pyFAI's own engines for
each sub-integration (family sectors, Li window, ring bands, optional cake) are
stacked into one ``scipy.sparse`` CSR projection restricted to the pixels any
product needs (a few per cent of an Eiger 4M).  Solid angle, polarisation and
the mask are folded into the matrix, so a batch of ``n`` frames costs one
gather of the needed pixels and one sparse × dense product::

    out (n_out, n) = M (n_out, n_used) @ frames[:, used].T

with ``M[b, p] = C[b, p] / Σ_p C[b, p]·norm[p]``: exactly pyFAI's
``integrate1d_ng`` / ``integrate2d_ng`` mean intensity for the same method; the 2D parts
(Li window, cake) as pyFAI's over a q range padded by whole bins, so no pixel is clamped
at the range's ends (thread-dependent weights otherwise: see
`opmap.analysis._reduction_matrix.cake_matrix`).

Detector markers.  In an unsigned-integer frame the largest value of the dtype
(``2**32 - 1`` for the Eiger's uint32, ``2**16 - 1`` for uint16) marks a gap or
dead pixel.  Module gaps are in the static mask and never read.  A marker met in
a needed pixel drops that pixel from numerator *and* denominator for that frame
only (an exact second path used only for the frames that hold one), as pyFAI's
dummy handling does.  NaN, infinite or negative values in needed pixels are errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._reduction_matrix import (
    SubIntegration,
    cake_matrix,
    empty_matrix_checked_by_caller,
    engine_matrix,
)
from ._reduction_plan import (
    CakeBinning,
    QBinning,
    QWindow,
    ReductionPlan,
    SectorProfile,
    between_spots_sectors,
    default_bands,
    off_pixel_axes_sectors,
)
from .families import ChiSector
from .geometry import DetectorGeometry

__all__ = [
    "CakeBinning",
    "CompiledReduction",
    "QBinning",
    "QWindow",
    "ReducedFrames",
    "ReductionPlan",
    "SectorProfile",
    "between_spots_sectors",
    "compile_reduction",
    "default_bands",
    "off_pixel_axes_sectors",
]


logger = logging.getLogger(__name__)
_MIN_BIN_AREA = 1e-6  # pixel areas (× solid angle × polarisation) below which a bin is empty


@dataclass(frozen=True)
class ReducedFrames:
    """Reduced products of ``n_frames`` frames (mean intensity per bin, NaN where no pixel).

    Attributes
    ----------
    profiles : Mapping[str, numpy.ndarray]
        ``"<family>:003"``, ``"<family>:110"``: float32 (n_frames, n_q).
    profile_q : Mapping[str, numpy.ndarray]
        Same keys: (n_q,) bin centres, Å⁻¹.
    li_window : numpy.ndarray
        float32 (n_frames, n_chi, n_q) (360 × 10 by default) of the Li (110) window.
    li_window_chi_deg, li_window_q : numpy.ndarray
        Bin centres: chi in degrees in [0, 360) (0.5, 1.5, ...), q in Å⁻¹.
    bands : Mapping[str, numpy.ndarray]
        Full-ring mean intensity per band, float32 (n_frames,).
    cake : numpy.ndarray or None
        float32 (n_frames, n_chi, n_q) when the plan asks for it.
    cake_chi_deg, cake_q : numpy.ndarray or None
        Bin centres of the cake.
    li_window_variance : numpy.ndarray or None
        float64 (n_chi, n_q): Poisson variance factor v of each Li-window bin. For pixel
        counts drawn from Poisson laws of mean ``I · norm`` (I: the bin's intensity, norm:
        solid angle × polarisation), the bin's mean intensity has variance ``I · v``,
        ``v = Σ_p C[b, p]² norm[p] / (Σ_p C[b, p] norm[p])²`` (pyFAI's Poisson error model
        for pixel-split bins); ``I / v`` is the bin's equivalent number of counts. NaN for
        empty bins; None when not known (hand-built products).
    """

    profiles: Mapping[str, np.ndarray]
    profile_q: Mapping[str, np.ndarray]
    li_window: np.ndarray
    li_window_chi_deg: np.ndarray
    li_window_q: np.ndarray
    bands: Mapping[str, np.ndarray]
    cake: np.ndarray | None = None
    cake_chi_deg: np.ndarray | None = None
    cake_q: np.ndarray | None = None
    li_window_variance: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        """Number of reduced frames."""
        return int(self.li_window.shape[0])


@dataclass(frozen=True)
class _Segment:
    key: str
    kind: str  # "profile", "li_window", "band" or "cake"
    start: int
    shape: tuple[int, ...]

    @property
    def stop(self) -> int:
        return self.start + int(np.prod(self.shape))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def _bin_centres(binning: QBinning) -> np.ndarray:
    edges = np.linspace(binning.q_min_inv_angstrom, binning.q_max_inv_angstrom, binning.n_q + 1)
    return 0.5 * (edges[:-1] + edges[1:])


def _chi_centres_deg(n_chi: int) -> np.ndarray:
    return (np.arange(n_chi) + 0.5) * (360.0 / n_chi)


def _q_range(window: QWindow) -> tuple[float, float]:
    return (window.q_min_inv_angstrom, window.q_max_inv_angstrom)


def _sector_matrix(
    geometry: DetectorGeometry,
    norm: np.ndarray,
    sector: ChiSector,
    plan: ReductionPlan,
    b: QBinning,
) -> SubIntegration:
    with empty_matrix_checked_by_caller():  # a piece without pixels is fine: said below
        pieces = [
            engine_matrix(
                geometry,
                norm,
                q_range=_q_range(b),
                n_q=b.n_q,
                chi_range_deg=chi,
                splitting=plan.splitting,
            )
            for chi in sector.to_pyfai_ranges_deg()
        ]
    total = pieces[0]
    for piece in pieces[1:]:
        total = total + piece
    if not np.any(total.denominator > _MIN_BIN_AREA):
        logger.warning(
            "sector chi [%g, %g) deg, q %g-%g 1/A has no unmasked pixel on the detector",
            sector.start_chi_deg, sector.end_chi_deg,
            b.q_min_inv_angstrom, b.q_max_inv_angstrom,
        )  # fmt: skip
    return total


def _cake_matrix(
    geometry: DetectorGeometry, norm: np.ndarray, binning: CakeBinning, splitting: str
) -> SubIntegration:
    """2D sub-integration with rows reordered to (chi in [0, 360), q), chi-major."""
    sub = cake_matrix(
        geometry,
        norm,
        q_range=_q_range(binning),
        n_q=binning.n_q,
        n_chi=binning.n_chi,
        splitting=splitting,
    )
    n_chi, n_q = binning.n_chi, binning.n_q
    # pyFAI row = i_q * n_chi + k with chi bin k starting at -180°; ours: j * n_q + i_q,
    # chi bin j starting at 0°, i.e. k = j - n_chi / 2 (mod n_chi).
    j, i_q = np.divmod(np.arange(n_chi * n_q), n_q)
    old_rows = i_q * n_chi + (j - n_chi // 2) % n_chi
    sub.numerator = sub.numerator[old_rows]
    sub.denominator = sub.denominator[old_rows]
    return sub


def _require_pixels(sub: SubIntegration, what: str, allow_empty: bool) -> None:
    if not allow_empty and not np.any(sub.denominator > _MIN_BIN_AREA):
        raise ValueError(
            f"{what} has no unmasked pixel on the detector: check the mask (gaps, beamstop, "
            "shadow sectors), the geometry and the q range, or set allow_empty_sectors=True"
        )


def compile_reduction(plan: ReductionPlan, geometry: DetectorGeometry) -> CompiledReduction:
    """Compile ``plan`` for ``geometry`` (and its mask) into one sparse projection.

    Parameters
    ----------
    plan : ReductionPlan
        Products to compute.
    geometry : DetectorGeometry
        Detector geometry; its ``effective_mask`` is folded into the matrix.

    Returns
    -------
    CompiledReduction

    Raises
    ------
    ValueError
        A family sector, the Li window, a band or the cake has no unmasked pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from pyFAI.detectors import Detector
    >>> detector = Detector(pixel1=3e-4, pixel2=3e-4, max_shape=(541, 517))
    >>> geo = DetectorGeometry(detector, distance_m=0.1, poni1_m=0.081, poni2_m=0.0775)
    >>> plan = ReductionPlan.model_validate({"families": {"family": [
    ...     {"name": "perp", "azimuths_003_deg": [25, 160, 205, 345], "azimuths_110_deg": [90]},
    ...     {"name": "par", "azimuths_003_deg": [90, 275], "azimuths_110_deg": [210]}]}})
    >>> reduction = compile_reduction(plan, geo)
    >>> out = reduction.reduce(np.ones((2, 541, 517), np.float32))
    >>> out.profiles["perp:003"].shape, out.li_window.shape, out.bands["ti_100"].shape
    ((2, 40), (2, 360, 10), (2,))
    >>> bool(np.allclose(out.bands["ti_100"], 1 / reduction.mean_norm("ti_100"), rtol=1e-5))
    True
    """
    shape = geometry.shape
    ai = geometry.integrator
    norm = np.asarray(ai.solidAngleArray(shape, True), np.float64)
    if plan.polarization_factor is not None:
        norm = norm * ai.polarization(shape, plan.polarization_factor)
    norm = norm.ravel()

    parts, profile_q = _profile_parts(plan, geometry, norm)
    li = plan.li_window
    li_sub = _cake_matrix(geometry, norm, li, plan.splitting)
    _require_pixels(li_sub, "the Li (110) window", False)
    parts.append(("li_window", "li_window", (li.n_chi, li.n_q), li_sub))
    for name, window in plan.bands.items():
        band = engine_matrix(
            geometry, norm, q_range=_q_range(window), n_q=1, splitting=plan.splitting
        )
        _require_pixels(band, f"band {name!r}", False)
        parts.append((name, "band", (), band))
    if plan.cake is not None:
        cake_sub = _cake_matrix(geometry, norm, plan.cake, plan.splitting)
        _require_pixels(cake_sub, "the cake", False)
        parts.append(("cake", "cake", (plan.cake.n_chi, plan.cake.n_q), cake_sub))
    return CompiledReduction._from_parts(plan, geometry, norm, parts, profile_q)


_Part = tuple[str, str, tuple[int, ...], SubIntegration]  # key, kind, bin shape, matrix


def _profile_parts(
    plan: ReductionPlan, geometry: DetectorGeometry, norm: np.ndarray
) -> tuple[list[_Part], dict[str, np.ndarray]]:
    """One q profile per family and reflection, summed over the family's χ sectors."""
    parts: list[_Part] = []
    profile_q: dict[str, np.ndarray] = {}
    for family in plan.families.family:
        for reflection, binning in (("003", plan.profile_003), ("110", plan.profile_110)):
            sectors = family.sectors(reflection)  # type: ignore[arg-type]
            if not sectors:
                continue
            key = f"{family.name}:{reflection}"
            total: SubIntegration | None = None
            for sector in sectors:
                sub = _sector_matrix(geometry, norm, sector, plan, binning)
                _require_pixels(
                    sub,
                    f"sector {key} chi [{sector.start_chi_deg:g}, {sector.end_chi_deg:g}) deg, "
                    f"q {binning.q_min_inv_angstrom}–{binning.q_max_inv_angstrom} Å⁻¹",
                    plan.allow_empty_sectors,
                )
                total = sub if total is None else total + sub
            assert total is not None
            parts.append((key, "profile", (binning.n_q,), total))
            profile_q[key] = _bin_centres(binning)
    full_ring = (ChiSector(start_chi_deg=0.0, width_deg=180.0),
                 ChiSector(start_chi_deg=180.0, width_deg=180.0))  # fmt: skip
    for name, binning in plan.reference_profiles.items():
        key = f"reference:{name}"
        parts.append((key, "profile", (binning.n_q,),
                      _sectors_matrix(geometry, norm, full_ring, plan, binning)))  # fmt: skip
        profile_q[key] = _bin_centres(binning)
    for name, profile in plan.sector_profiles.items():
        key = f"sectors:{name}"
        total = _sectors_matrix(geometry, norm, profile.sectors, plan, profile)
        _require_pixels(total, f"sector profile {key}", plan.allow_empty_sectors)
        parts.append((key, "profile", (profile.n_q,), total))
        profile_q[key] = _bin_centres(profile)
    return parts, profile_q


def _sectors_matrix(
    geometry: DetectorGeometry,
    norm: np.ndarray,
    sectors: tuple[ChiSector, ...],
    plan: ReductionPlan,
    b: QBinning,
) -> SubIntegration:
    """One q profile summed over ``sectors`` (at least one)."""
    total = _sector_matrix(geometry, norm, sectors[0], plan, b)
    for sector in sectors[1:]:
        total = total + _sector_matrix(geometry, norm, sector, plan, b)
    return total


class CompiledReduction:
    """A plan compiled for one geometry and mask; reduces frames by sparse products.

    Build with :func:`compile_reduction`.  Attributes are read-only by convention.

    Attributes
    ----------
    plan : ReductionPlan
    geometry : DetectorGeometry
    pixel_index : numpy.ndarray
        int64 (n_used,), flat indices of the pixels any product reads.
    matrix : scipy.sparse.csr_array
        float32 (n_outputs, n_used), normalised projection (rows of empty bins are 0).
    """

    plan: ReductionPlan
    geometry: DetectorGeometry
    pixel_index: np.ndarray
    matrix: sp.csr_array

    @classmethod
    def _from_parts(cls, plan, geometry, norm, parts, profile_q) -> CompiledReduction:
        self = cls.__new__(cls)
        numerator = sp.vstack([p[3].numerator for p in parts], format="csr")
        denominator = np.concatenate([p[3].denominator for p in parts])
        self.pixel_index = np.unique(numerator.indices).astype(np.int64)
        compact = numerator[:, self.pixel_index].tocsr()
        # pyFAI's full splitting can leave a bin with a vanishing (even slightly negative,
        # rounding) pixel area; bins covering less than 1e-6 of a pixel are empty (NaN).
        filled = denominator > _MIN_BIN_AREA
        inverse = np.where(filled, 1.0 / np.where(filled, denominator, 1.0), 0.0)
        self.matrix = sp.csr_array(sp.diags_array(inverse) @ compact, dtype=np.float32)
        self._numerator = sp.csr_array(compact, dtype=np.float32)
        self._weights = sp.csr_array(
            compact @ sp.diags_array(norm[self.pixel_index]), dtype=np.float32
        )
        self._empty = ~filled
        # Poisson variance factor of every bin: Σ C² norm / (Σ C norm)² (see ReducedFrames)
        squared = compact.multiply(compact) @ norm[self.pixel_index]
        self._variance = np.where(filled, squared * inverse**2, np.nan)
        self._mean_norm = {
            key: _ratio(sub.denominator.sum(), sub.numerator.sum()) for key, _, _, sub in parts
        }
        self._segments = []
        start = 0
        for key, kind, shape, _ in parts:
            self._segments.append(_Segment(key, kind, start, shape))
            start = self._segments[-1].stop
        self.plan, self.geometry, self._profile_q = plan, geometry, profile_q
        return self

    @property
    def n_outputs(self) -> int:
        """Number of output values per frame (all bins of all products)."""
        return int(self.matrix.shape[0])

    @property
    def pixel_fraction(self) -> float:
        """Fraction of detector pixels the reduction reads."""
        h, w = self.geometry.shape
        return self.pixel_index.size / (h * w)

    def mean_norm(self, key: str) -> float:
        """Pixel-fraction-weighted mean of solid angle × polarisation over product ``key``."""
        return self._mean_norm[key]

    def reduce_packed(
        self, frames: np.ndarray, *, threads: int | None = None, batch_size: int = 32
    ) -> np.ndarray:
        """Reduce numpy frames into the packed output, float32 (n_frames, n_outputs).

        Parameters
        ----------
        frames : numpy.ndarray
            (n, H, W) or (H, W); unsigned/signed integer or float.
        threads : int, optional
            Worker threads over batches (default: 2).
        batch_size : int, optional
            Frames per sparse × dense product (1 to 4096).
        """
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[np.newaxis]
        self.geometry.check_frames(frames.shape)
        if not 1 <= batch_size <= 4096:
            raise ValueError(f"batch_size must be in [1, 4096], got {batch_size}")
        n_threads = 2 if threads is None else threads
        if not 1 <= n_threads <= 64:
            raise ValueError(f"threads must be in [1, 64], got {threads}")
        if not (
            np.issubdtype(frames.dtype, np.integer) or np.issubdtype(frames.dtype, np.floating)
        ):
            raise ValueError(f"frames must hold integers or floats, got dtype {frames.dtype}")
        flat = frames.reshape(frames.shape[0], -1)
        out = np.empty((frames.shape[0], self.n_outputs), np.float32)
        starts = range(0, frames.shape[0], batch_size)

        def work(start: int) -> None:
            stop = min(start + batch_size, frames.shape[0])
            out[start:stop] = self._reduce_batch(flat[start:stop], first_frame=start)

        if n_threads == 1 or len(starts) == 1:
            for start in starts:
                work(start)
        else:
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                list(pool.map(work, starts))
        return out

    def _reduce_batch(self, flat: np.ndarray, *, first_frame: int) -> np.ndarray:
        values = flat[:, self.pixel_index]
        markers = self._check_values(values, first_frame)
        columns = np.ascontiguousarray(values.T, dtype=np.float32)  # (n_used, n)
        result = np.asarray(self.matrix @ columns).T
        if markers is not None:
            hit = np.flatnonzero(markers.any(axis=1))
            valid = np.ascontiguousarray((~markers[hit]).T, dtype=np.float32)
            with np.errstate(invalid="ignore", divide="ignore"):
                exact = (self._numerator @ (columns[:, hit] * valid)) / (self._weights @ valid)
            result[hit] = exact.T
        result[:, self._empty] = np.nan
        return result

    @staticmethod
    def _check_values(values: np.ndarray, first_frame: int) -> np.ndarray | None:
        """Validate needed pixels; return the marker mask of unsigned frames (or None)."""
        if np.issubdtype(values.dtype, np.unsignedinteger):
            markers = values == np.iinfo(values.dtype).max
            return markers if markers.any() else None
        if np.issubdtype(values.dtype, np.floating):
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                frame = int(np.argmax(bad))
                kind = "NaN" if np.isnan(values[frame]).any() else "infinite"
                raise ValueError(
                    f"frames contain {kind} counts in pixels the reduction reads (frame "
                    f"{first_frame + frame}); counts must be finite: mask those pixels "
                    "(opmap analyze --mask FILE, or the geometry's mask)"
                )
        negative = (values < 0).any(axis=1)
        if negative.any():
            raise ValueError(
                f"frames contain negative counts in pixels the reduction reads (frame "
                f"{first_frame + int(np.argmax(negative))}); counts must be >= 0"
            )
        return None

    def to_dask(self, frames: Any) -> Any:
        """Lazy packed reduction of a dask array (n, H, W) → dask float32 (n, n_outputs).

        Each block of frames is reduced with :meth:`reduce_packed` (``map_blocks``,
        one thread per block; dask parallelises across blocks).
        """
        import dask.array as da

        if not isinstance(frames, da.Array):
            raise ValueError(f"frames must be a dask array, got {type(frames).__name__}")
        if frames.ndim != 3:
            raise ValueError(f"frames must be a stack (n, H, W), got {frames.ndim} dimensions")
        self.geometry.check_frames(frames.shape)
        frames = frames.rechunk({1: -1, 2: -1})

        def block(chunk: np.ndarray) -> np.ndarray:
            return self.reduce_packed(chunk, threads=1)

        return frames.map_blocks(
            block, dtype=np.float32, drop_axis=2, chunks=(frames.chunks[0], (self.n_outputs,))
        )

    def reduce(self, frames: Any, *, threads: int | None = None) -> ReducedFrames:
        """Reduce frames into products.

        Parameters
        ----------
        frames : numpy.ndarray or dask.array.Array
            (n, H, W) or (H, W) numpy, or a dask (n, H, W) stack (computed here
            with the active dask scheduler).
        threads : int, optional
            Worker threads for numpy input (default 2).

        Returns
        -------
        ReducedFrames
        """
        if type(frames).__module__.startswith("dask"):
            packed = np.asarray(self.to_dask(frames).compute())
        else:
            packed = self.reduce_packed(frames, threads=threads)
        return self.unpack(packed)

    def unpack(self, packed: np.ndarray) -> ReducedFrames:
        """Split a packed (n, n_outputs) array into :class:`ReducedFrames`."""
        packed = np.asarray(packed)
        if packed.ndim != 2 or packed.shape[1] != self.n_outputs:
            raise ValueError(f"packed must have shape (n, {self.n_outputs}), got {packed.shape}")
        n = packed.shape[0]
        pieces = {
            s.key: packed[:, s.start : s.stop].reshape((n, *s.shape)) for s in self._segments
        }
        kinds = {s.key: s.kind for s in self._segments}
        li, cake = self.plan.li_window, self.plan.cake
        return ReducedFrames(
            profiles={k: v for k, v in pieces.items() if kinds[k] == "profile"},
            profile_q=dict(self._profile_q),
            li_window=pieces["li_window"],
            li_window_chi_deg=_chi_centres_deg(li.n_chi),
            li_window_q=_bin_centres(li),
            bands={k: v for k, v in pieces.items() if kinds[k] == "band"},
            cake=pieces.get("cake"),
            cake_chi_deg=None if cake is None else _chi_centres_deg(cake.n_chi),
            cake_q=None if cake is None else _bin_centres(cake),
            li_window_variance=self._variance[self._segment("li_window")].reshape(
                li.n_chi, li.n_q
            ),
        )

    def _segment(self, key: str) -> slice:
        segment = next(s for s in self._segments if s.key == key)
        return slice(segment.start, segment.stop)

    def __repr__(self) -> str:
        return (
            f"CompiledReduction(n_outputs={self.n_outputs}, n_pixels={self.pixel_index.size}, "
            f"pixel_fraction={self.pixel_fraction:.3f}, nnz={self.matrix.nnz})"
        )
