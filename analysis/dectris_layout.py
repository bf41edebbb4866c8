"""Where the Dectris file writer (and opmap's Eiger) put frames and per-frame values in HDF5.

``<name>_master.h5``
    ``/entry/data/data_000001``, ``data_000002``, … external links to the data files, in
    acquisition order; opmap adds ``/entry/data/data``, a virtual dataset stacking them, and
    ``/entry/opmap/x_um`` / ``/entry/opmap/time_s`` likewise.
``<name>_data_000001.h5`` …
    ``/entry/data/data`` (n, H, W) frames; opmap adds per-frame ``/entry/opmap/x_um`` (beam x
    at mid-exposure, µm) and ``/entry/opmap/time_s`` (experiment time at mid-exposure, s).

The devices keep the same facts in ``devices/_eiger_layout.py`` (what the writers produce).
The analysis keeps its own copy here because its import contract (pyproject's import-linter
section) forbids importing ``opmap.devices``: the analysis must read files from any Eiger,
with or without bluesky installed. Both copies spell the paths alike; change them together.
"""

from __future__ import annotations

__all__ = [
    "DATA_GROUP",
    "DATA_LINK_PREFIX",
    "DATA_PATH",
    "DETECTOR_GROUP",
    "TIME_PATH",
    "X_PATH",
    "data_link",
]

#: Group of the master file holding the data-file links (and opmap's virtual dataset).
DATA_GROUP = "/entry/data"
#: Frames (n, H, W): the dataset in each data file, opmap's virtual dataset in the master.
DATA_PATH = "/entry/data/data"
#: Name prefix of the master file's external links to the data files (``data_000001``).
DATA_LINK_PREFIX = "data_"
#: Per-frame experiment time at mid-exposure (s), written by opmap's Eiger.
TIME_PATH = "/entry/opmap/time_s"
#: Per-frame beam x at mid-exposure (µm), written by opmap's Eiger.
X_PATH = "/entry/opmap/x_um"
#: Detector description (pixel size, distance, beam centre) in the master file.
DETECTOR_GROUP = "/entry/instrument/detector"


def data_link(number: int) -> str:
    """Path of the master file's link to data file ``number`` (1-based).

    Examples
    --------
    >>> data_link(1)
    '/entry/data/data_000001'
    """
    if not (isinstance(number, int) and 1 <= number <= 999_999):
        raise ValueError(f"number must be an integer in [1, 999999], got {number!r}")
    return f"{DATA_GROUP}/{DATA_LINK_PREFIX}{number:06d}"
