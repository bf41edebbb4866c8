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

Frame-shape convention: with one collection per event, the descriptor shape of the frame key
is the frame shape ``[H, W]`` (not ``[1, H, W]``), so Tiled registers ``(N, H, W)``, exactly
what the files hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from event_model import DataKey
from ophyd_async.core import StreamResourceDataProvider

__all__ = [
    "DATA_PATH",
    "FRAMES_PER_FILE",
    "TIME_PATH",
    "X_PATH",
    "EigerMetadata",
    "FrameStreamProvider",
]

DATA_PATH = "/entry/data/data"
X_PATH = "/entry/opmap/x_um"
TIME_PATH = "/entry/opmap/time_s"
FRAMES_PER_FILE = 1000
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


class FrameStreamProvider(StreamResourceDataProvider):
    """`StreamResourceDataProvider` whose frame key has the frame shape per event.

    With ``collections_per_event == 1`` the leading 1 is dropped from every data key shape
    (see the module docstring); otherwise the ophyd-async shape ``[k, ...]`` is kept.
    """

    async def make_datakeys(self, collections_per_event: int) -> dict[str, DataKey]:
        keys = await super().make_datakeys(collections_per_event)
        if collections_per_event == 1:
            for key in keys.values():
                key["shape"] = list(key["shape"][1:])
        return keys
