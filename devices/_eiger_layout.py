"""Dectris file-writer layout and the frame-stream convention shared by real and sim Eigers.

Layout (what the Eiger's file writer produces, plus one opmap addition):

``<name>_master.h5``
    ``/entry/instrument/detector/{x,y}_pixel_size`` (m), ``detector_distance`` (m),
    ``beam_center_{x,y}`` (pixel), ``count_time`` (s), ``frame_time`` (s), ``description``;
    ``/entry/instrument/beam/incident_wavelength`` (Å); each with a ``units`` attribute.
    ``/entry/data/data_000001`` ... external links to the data files.
    ``/entry/data/data`` (opmap) a virtual dataset stacking every data file, so one stream
    resource covers the whole acquisition however many data files it spans; likewise
    ``/entry/opmap/x_um`` and ``/entry/opmap/time_s``.
``<name>_data_000001.h5`` ...
    ``/entry/data/data`` uint32 (n, H, W), bitshuffle-LZ4, chunk = one frame, at most
    ``frames_per_file`` (Dectris default 1000) frames; opmap adds per-frame
    ``/entry/opmap/x_um`` (beam x at mid-exposure) and ``/entry/opmap/time_s`` (experiment
    time at mid-exposure).

What a real Dectris file writer writes is only the first part: the master with per-file
links ``/entry/data/data_000001`` ... (`DATA_LINK_TEMPLATE`), each link holding
``nimages_per_file`` frames (the last one fewer), no stacked ``/entry/data/data`` and no
``/entry/opmap``. Stream resources of that layout use `DECTRIS_LINKS_MIMETYPE` and name the
links with `dectris_links_parameters`.

Frame-shape convention: ophyd-async's. A data key's descriptor shape starts with the
collections per event, so with one frame per event the frame key is ``[1, H, W]`` and the
per-frame scalars ``[1]``, while the files hold ``(N, H, W)`` and ``(N,)``. Tiled's
consolidator registers ``(N, 1, H, W)`` (a lone ``[1]`` becomes a scalar column, ``(N,)``)
and the run's validation after ``stop`` fixes the array to the file's ``(N, H, W)``; every
opmap reader drops the leading 1 (``opmap.callbacks.frames.per_frame_shape``), so a stock
ophyd-async ``StandardDetector`` works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DATA_LINK_TEMPLATE",
    "DATA_PATH",
    "DECTRIS_LINKS_MIMETYPE",
    "FRAMES_PER_FILE",
    "TIME_PATH",
    "X_PATH",
    "EigerMetadata",
    "dectris_links_parameters",
]

DATA_PATH = "/entry/data/data"
X_PATH = "/entry/opmap/x_um"
TIME_PATH = "/entry/opmap/time_s"
FRAMES_PER_FILE = 1000
#: The master's external link to data file ``n`` (1-based): ``DATA_LINK_TEMPLATE.format(n)``.
DATA_LINK_TEMPLATE = "/entry/data/data_{:06d}"
#: Mimetype of a stream resource over a Dectris master whose frames sit behind per-file
#: links (no stacked dataset): readers must follow `dectris_links_parameters`.
DECTRIS_LINKS_MIMETYPE = "application/x-hdf5;layout=dectris-links"
#: HDF5 filter id of bitshuffle (with LZ4 inside).
BITSHUFFLE_FILTER_ID = 32008


@dataclass(frozen=True)
class EigerMetadata:
    """Detector description written under ``/entry/instrument`` of the master file.

    Parameters
    ----------
    x_pixel_size_m, y_pixel_size_m
        Pixel pitch (m), 75e-6 for the Eiger X 4M (times the binning in simulations).
    detector_distance_m
        Sample–detector distance (m).
    beam_center_x_px, beam_center_y_px
        Direct-beam position on the detector (pixels, column and row).
    wavelength_angstrom
        Incident wavelength (Å).
    description
        Detector model.
    """

    x_pixel_size_m: float
    y_pixel_size_m: float
    detector_distance_m: float
    beam_center_x_px: float
    beam_center_y_px: float
    wavelength_angstrom: float
    description: str = "Dectris EIGER X 4M"


def dectris_links_parameters(frames_per_file: int) -> dict[str, object]:
    """Stream-resource parameters of a Dectris master read through its per-file links.

    Frame ``i`` (0-based, in the resource) is row ``i % frames_per_file`` of the dataset
    ``link_template.format(i // frames_per_file + 1)`` in the master, an HDF5 external link
    to ``<name>_data_NNNNNN.h5:/entry/data/data``.

    Examples
    --------
    >>> p = dectris_links_parameters(1000)
    >>> p["link_template"].format(1), p["frames_per_file"]
    ('/entry/data/data_000001', 1000)
    """
    if frames_per_file < 1:
        raise ValueError(f"frames_per_file={frames_per_file} must be >= 1")
    return {
        "link_template": DATA_LINK_TEMPLATE,
        "first_link": 1,
        "frames_per_file": int(frames_per_file),
        "dataset_in_data_file": DATA_PATH,
        "swmr": False,
    }
