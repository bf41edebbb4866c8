"""Headless detector calibration from a calibrant image, with an independent ring check.

pyFAI's automatic calibration (``SingleGeometry.extract_cp`` then
``GeometryRefinement.refine3``, iterated) converges from a good start.  From a
poor start it may assign control points to the wrong calibrant rings and then
converge to a wrong geometry *with small residuals*: the residual only measures
how well the points fit the rings they were given.

The independent check used here does not look at the control points.  It
integrates the whole image with the refined geometry into a 2θ profile, finds
its peaks and compares them with *every* resolvable calibrant ring inside the
detector's 2θ range: a correct geometry puts a peak on (nearly) every ring and
leaves (nearly) no strong peak unexplained; a geometry built on a wrong ring
assignment misplaces most rings beyond the first few, because the calibrant's
d-spacing sequence is not a scaled copy of itself.  The fit is accepted only if
both the matched fraction of rings and the explained fraction of peaks reach
``min_match_fraction`` over at least ``min_rings`` rings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyFAI.calibrant import get_calibrant
from pyFAI.goniometer import SingleGeometry
from scipy.signal import find_peaks

from .geometry import DetectorGeometry

__all__ = [
    "CalibrationRejectedError",
    "CalibrationResult",
    "RingCheck",
    "calibrate_geometry",
    "check_rings",
]


@dataclass(frozen=True)
class RingCheck:
    """Independent comparison of image peaks with calibrant rings (2θ in degrees)."""

    rings_checked: int
    rings_matched: int
    peaks_found: int
    peaks_explained: int
    tolerance_2theta_deg: float

    @property
    def ring_fraction(self) -> float:
        """Fraction of resolvable calibrant rings with a peak within tolerance."""
        return self.rings_matched / self.rings_checked if self.rings_checked else 0.0

    @property
    def peak_fraction(self) -> float:
        """Fraction of strong image peaks lying on a calibrant ring."""
        return self.peaks_explained / self.peaks_found if self.peaks_found else 0.0


@dataclass(frozen=True)
class CalibrationResult:
    """Refined geometry and its quality report.

    Attributes
    ----------
    geometry : DetectorGeometry
        Refined geometry (mask of the starting geometry kept).
    residual_2theta_deg : float
        RMS of control-point 2θ minus assigned ring 2θ, degrees.
    rings_used : tuple of int
        Calibrant ring indices (0-based) holding control points.
    n_control_points : int
        Control points in the last refinement.
    ring_check : RingCheck
        Independent ring-position check.
    accepted : bool
        Whether the fit passed the check.
    reason : str
        Why the fit was rejected ("" when accepted).
    """

    geometry: DetectorGeometry
    residual_2theta_deg: float
    rings_used: tuple[int, ...]
    n_control_points: int
    ring_check: RingCheck
    accepted: bool
    reason: str = ""


class CalibrationRejectedError(RuntimeError):
    """A refinement that failed the independent ring check (see ``.result``)."""

    def __init__(self, result: CalibrationResult) -> None:
        super().__init__(f"calibration rejected: {result.reason}")
        self.result = result


def _calibrant(name: str, wavelength_angstrom: float):
    try:
        calibrant = get_calibrant(name)
    except Exception as error:  # pyFAI raises KeyError or ValueError by version
        raise ValueError(f"calibrant must be a pyFAI calibrant name, got {name!r}") from error
    calibrant.wavelength = wavelength_angstrom * 1e-10
    return calibrant


def check_rings(
    image: np.ndarray,
    geometry: DetectorGeometry,
    *,
    calibrant: str = "CeO2",
    tolerance_2theta_deg: float | None = None,
) -> RingCheck:
    """Compare the 2θ profile of ``image`` under ``geometry`` with the calibrant rings.

    Parameters
    ----------
    image : numpy.ndarray
        Calibrant image, (H, W).
    geometry : DetectorGeometry
        Geometry to judge.
    calibrant : str
        pyFAI calibrant name.
    tolerance_2theta_deg : float, optional
        Match tolerance; default one pixel's angular width at the PONI distance.

    Returns
    -------
    RingCheck
    """
    geometry.check_frames(np.shape(image), name="image")
    pixel_deg = float(np.rad2deg(max(geometry.pixel_size_m) / geometry.distance_m))
    tol = pixel_deg if tolerance_2theta_deg is None else tolerance_2theta_deg
    ai = geometry.integrator
    tth_map = np.rad2deg(ai.center_array(geometry.shape, unit="2th_rad", scale=False))
    valid = ~geometry.effective_mask
    lo, hi = float(tth_map[valid].min()), float(tth_map[valid].max())
    found = _profile_peaks_deg(image, geometry, lo, hi, tol)
    rings = np.rad2deg(
        [t for t in _calibrant(calibrant, geometry.wavelength_angstrom).get_2th() if t]
    )
    rings = rings[(rings > lo + tol) & (rings < hi - tol)]
    # only rings resolvable from their neighbours take part
    gaps = np.diff(np.concatenate(([-np.inf], rings, [np.inf])))
    resolvable = rings[(gaps[:-1] > 3 * tol) & (gaps[1:] > 3 * tol)]
    matched = sum(bool(np.any(np.abs(found - r) <= tol)) for r in resolvable)
    explained = sum(bool(np.any(np.abs(rings - p) <= tol)) for p in found)
    return RingCheck(
        rings_checked=int(resolvable.size),
        rings_matched=int(matched),
        peaks_found=int(found.size),
        peaks_explained=int(explained),
        tolerance_2theta_deg=tol,
    )


def _profile_peaks_deg(
    image: np.ndarray, geometry: DetectorGeometry, lo: float, hi: float, tol: float
) -> np.ndarray:
    """2θ (deg) of the strong peaks of the image's 2θ profile over [lo, hi] deg."""
    n_bins = int(np.clip((hi - lo) / (tol / 4), 200, 20_000))
    profile = geometry.integrator.integrate1d_ng(
        image, n_bins, unit="2th_deg", radial_range=(lo, hi), method=("bbox", "csr", "cython")
    )
    intensity = np.nan_to_num(np.asarray(profile.intensity, float))
    spread = float(np.percentile(intensity, 90) - np.percentile(intensity, 10))
    # bin-to-bin noise (robust): a peak must stand well above it, or Poisson noise in the
    # sparsely populated outer bins would count as unexplained peaks
    noise = 1.4826 * float(np.median(np.abs(np.diff(intensity)))) / np.sqrt(2.0)
    peaks, props = find_peaks(intensity, prominence=max(0.1 * spread, 6.0 * noise, 1e-12))
    # strong peaks only (>= 1 % of the strongest): partial rings in the detector corners
    # leave faint bumps that say nothing about the geometry
    prominence = props["prominences"]
    strong = prominence >= 0.01 * prominence.max() if prominence.size else prominence > 0
    return np.asarray(profile.radial)[peaks[strong]]


def _residual_deg(refinement) -> tuple[float, tuple[int, ...], int]:
    data = np.asarray(refinement.data, float)
    if data.size == 0:
        return float("inf"), (), 0
    tth = refinement.tth(data[:, 0], data[:, 1])
    expected = np.asarray(refinement.calibrant.get_2th())[data[:, 2].astype(int)]
    rms = float(np.rad2deg(np.sqrt(np.mean((tth - expected) ** 2))))
    return rms, tuple(sorted({int(r) for r in data[:, 2]})), len(data)


def _mask_detector_markers(
    image: np.ndarray, start: DetectorGeometry
) -> tuple[np.ndarray, DetectorGeometry]:
    """Zero and mask the pixels an unsigned-integer frame marks as gap or dead.

    The Eiger writes the largest value of its dtype (2**32 - 1 in uint32) into module gaps
    and dead pixels; a PONI file does not carry the gap mask, so the marker is the only
    record. Left in, those pixels are the brightest "peaks" and derail the ring picking.
    """
    if image.dtype.kind != "u":
        return image.astype(np.float32), start
    marker = image == np.iinfo(image.dtype).max
    if not marker.any():
        return image.astype(np.float32), start
    mask = marker if start.mask is None else (start.mask | marker)
    return np.where(marker, 0, image).astype(np.float32), start.with_mask(mask)


def calibrate_geometry(
    image: np.ndarray,
    start: DetectorGeometry,
    *,
    calibrant: str = "CeO2",
    passes: int = 5,
    max_rings: int | None = None,
    points_per_degree: float = 1.0,
    min_rings: int = 6,
    min_match_fraction: float = 0.8,
    strict: bool = True,
) -> CalibrationResult:
    """Refine the geometry from a calibrant image and judge it independently.

    Parameters
    ----------
    image : numpy.ndarray
        Calibrant image (H, W) matching ``start``'s detector.
    start : DetectorGeometry
        Starting geometry (distance within ~1.5 mm, beam centre within a few pixels).
    calibrant : str
        pyFAI calibrant name, e.g. "CeO2", "alpha_Al2O3".
    passes : int
        Extract-and-refine iterations (1 to 20).
    max_rings : int, optional
        Rings to extract control points from per pass (default: all in range).
    points_per_degree : float
        Control points per degree of azimuth (0.1 to 10).
    min_rings : int
        Fewest resolvable rings the independent check needs (>= 3).
    min_match_fraction : float
        Required matched-ring and explained-peak fractions (0.5 to 1).
    strict : bool
        Raise :class:`CalibrationRejectedError` on rejection (default); else
        return the result with ``accepted=False``.

    Returns
    -------
    CalibrationResult

    Examples
    --------
    >>> from pyFAI.calibrant import get_calibrant
    >>> from pyFAI.detectors import Detector
    >>> det = Detector(pixel1=3e-4, pixel2=3e-4, max_shape=(300, 300))
    >>> truth = DetectorGeometry(det, distance_m=0.1, poni1_m=0.045, poni2_m=0.045)
    >>> ceo2 = get_calibrant("CeO2"); ceo2.wavelength = 0.6888e-10
    >>> image = ceo2.fake_calibration_image(truth.integrator, Imax=1000, resolution=0.05)
    >>> start = DetectorGeometry(det, distance_m=0.101, poni1_m=0.0453, poni2_m=0.0448)
    >>> result = calibrate_geometry(image, start, passes=3)
    >>> result.accepted, abs(result.geometry.distance_m - 0.1) < 2e-4
    (True, True)
    """
    start.check_frames(np.shape(image), name="image")
    _check_options(passes, points_per_degree, min_rings, min_match_fraction)
    image, start = _mask_detector_markers(np.asarray(image), start)
    refinement = _refine(image, start, calibrant, passes, max_rings, points_per_degree)
    residual, rings_used, n_points = _residual_deg(refinement)
    refined = DetectorGeometry.from_integrator(refinement, mask=start.mask)
    check = check_rings(image, refined, calibrant=calibrant)
    reason = _rejection(n_points, check, residual, min_rings, min_match_fraction)
    result = CalibrationResult(
        geometry=refined,
        residual_2theta_deg=residual,
        rings_used=rings_used,
        n_control_points=n_points,
        ring_check=check,
        accepted=not reason,
        reason=reason,
    )
    if reason and strict:
        raise CalibrationRejectedError(result)
    return result


def _check_options(
    passes: int, points_per_degree: float, min_rings: int, min_match_fraction: float
) -> None:
    if not 1 <= passes <= 20:
        raise ValueError(f"passes must be in [1, 20], got {passes}")
    if not 0.1 <= points_per_degree <= 10:
        raise ValueError(f"points_per_degree must be in [0.1, 10], got {points_per_degree}")
    if min_rings < 3:
        raise ValueError(f"min_rings must be >= 3, got {min_rings}")
    if not 0.5 <= min_match_fraction <= 1:
        raise ValueError(f"min_match_fraction must be in [0.5, 1], got {min_match_fraction}")


def _refine(
    image: np.ndarray,
    start: DetectorGeometry,
    calibrant: str,
    passes: int,
    max_rings: int | None,
    points_per_degree: float,
):
    """pyFAI's geometry refinement after ``passes`` extract-and-refine iterations."""
    single = SingleGeometry(
        "calibration",
        image=image,
        calibrant=_calibrant(calibrant, start.wavelength_angstrom),
        detector=start.integrator.detector,
        geometry=start.integrator,
    )
    refinement = single.geometry_refinement
    for _ in range(passes):
        single.extract_cp(max_rings=max_rings, pts_per_deg=points_per_degree)
        if len(refinement.data) < 6:
            break
        refinement.refine3(fix=["wavelength", "rot3"])
    return refinement


def _rejection(
    n_points: int,
    check: RingCheck,
    residual: float,
    min_rings: int,
    min_match_fraction: float,
) -> str:
    """Why the refined geometry is rejected, or "" when it is accepted."""
    if n_points < 6:
        return f"only {n_points} control points were found"
    if check.rings_checked < min_rings:
        return f"only {check.rings_checked} resolvable rings to check (min_rings={min_rings})"
    if min(check.ring_fraction, check.peak_fraction) < min_match_fraction:
        return (
            f"refined geometry misplaces the calibrant rings: {check.rings_matched}/"
            f"{check.rings_checked} rings matched, {check.peaks_explained}/{check.peaks_found} "
            f"peaks explained within {check.tolerance_2theta_deg:.3f} deg (needs "
            f"{min_match_fraction:.0%}); the start was probably too far off and rings were "
            f"mis-assigned (residual {residual:.4f} deg looks fine but is not evidence)"
        )
    if residual > 0.5 * check.tolerance_2theta_deg:
        return (
            f"control points scatter by {residual:.4f} deg rms, more than half a pixel "
            f"({0.5 * check.tolerance_2theta_deg:.4f} deg): the calibrant image is too weak "
            "or noisy for a reliable geometry; count longer"
        )
    return ""
