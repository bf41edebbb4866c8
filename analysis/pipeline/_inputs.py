"""Inputs of a file analysis besides the frames: a pixel mask file, map times, the output.

Each reader checks its input completely and raises ``ValueError`` naming the parameter and
what is allowed, so a command can refuse bad input before anything is computed or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

__all__ = ["check_output_path", "load_map_times_s", "load_mask_file"]

#: Suffixes read as HDF5 masks (``FILE.h5`` with one 2-D dataset, or ``FILE.h5::/path``).
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5")
#: Formats a mask file may have, for messages.
MASK_FORMATS = "NumPy .npy, EDF, TIFF, or HDF5 (FILE.h5 with one 2-D dataset, or FILE.h5::/path)"


def load_mask_file(spec: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a detector mask as pyFAI does: non-zero = excluded pixel.

    Parameters
    ----------
    spec : str or Path
        A NumPy ``.npy`` file, an EDF or TIFF image (read with fabio), or an HDF5 file
        holding one 2-D dataset (``FILE.h5``) or the dataset ``FILE.h5::/path``.
    shape : (int, int)
        Detector shape (rows, columns) the mask must have.

    Returns
    -------
    numpy.ndarray
        bool (rows, columns); ``True`` = pixel excluded.

    Raises
    ------
    ValueError
        Missing or unreadable file, not 2-D, not numeric, or the wrong shape.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mask.npy"
    >>> np.save(path, np.eye(3, 4, dtype=np.int8))
    >>> load_mask_file(path, (3, 4)).sum()
    np.int64(3)
    >>> load_mask_file(path, (4, 4))
    Traceback (most recent call last):
    ...
    ValueError: --mask ... has shape (3, 4) but the detector is (4, 4) (rows, columns)
    """
    text = str(spec)
    path_text, _, dataset = text.partition("::")
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"--mask {text}: file not found ({MASK_FORMATS})")
    values = _read_mask_values(path, dataset)
    if values.ndim != 2 or not (
        np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_
    ):
        raise ValueError(
            f"--mask {text} must be a 2-D numeric image, got {values.ndim}-D {values.dtype}"
        )
    if tuple(values.shape) != tuple(shape):
        raise ValueError(
            f"--mask {text} has shape {tuple(values.shape)} but the detector is "
            f"{tuple(shape)} (rows, columns)"
        )
    return np.asarray(values != 0)


def _read_mask_values(path: Path, dataset: str) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        if path.suffix.lower() in _HDF5_SUFFIXES or dataset:
            return _read_hdf5_mask(path, dataset)
        import fabio

        return np.asarray(fabio.open(str(path)).data)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        message = f"--mask {path} cannot be read as a mask ({MASK_FORMATS}): {error}"
        raise ValueError(message) from error


def _read_hdf5_mask(path: Path, dataset: str) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        if dataset:
            if not isinstance(h5.get(dataset), h5py.Dataset):
                raise ValueError(f"no dataset {dataset!r} in the file")
            return np.asarray(h5[dataset][()])
        images: list[str] = []
        h5.visititems(
            lambda name, node: (
                images.append(name) if isinstance(node, h5py.Dataset) and node.ndim == 2 else None
            )
        )
        if len(images) != 1:
            raise ValueError(f"the file holds {len(images)} 2-D datasets; name one as FILE::/path")
        return np.asarray(h5[images[0]][()])


def load_map_times_s(spec: str) -> np.ndarray:
    """Mid-map times (s) from a comma-separated list or a text file of numbers.

    Parameters
    ----------
    spec : str
        ``"0,600,1200"``, or the path of a text file with one number per line (commas,
        blanks and ``#`` comments allowed).

    Returns
    -------
    numpy.ndarray
        float (n_maps,), finite and strictly increasing.

    Raises
    ------
    ValueError
        Not numbers, not finite, or not strictly increasing (naming ``--map-times-s``).

    Examples
    --------
    >>> load_map_times_s("0, 600.5,1200")
    array([   0. ,  600.5, 1200. ])
    >>> load_map_times_s("0,600,600")
    Traceback (most recent call last):
    ...
    ValueError: --map-times-s must be strictly increasing; time 2 (600.0 s) does not follow 600.0 s
    """
    path = Path(spec)
    text = path.read_text() if path.is_file() else spec
    words = [w for line in text.splitlines() for w in line.split("#")[0].replace(",", " ").split()]
    if not words:
        raise ValueError(
            f"--map-times-s {spec!r} holds no times; give a comma list (0,600,1200) "
            "or a text file with one time in seconds per line"
        )
    try:
        times = np.array([float(word) for word in words])
    except ValueError:
        raise ValueError(
            f"--map-times-s {spec!r} must be numbers in seconds: a comma list (0,600,1200) "
            "or an existing text file with one number per line"
        ) from None
    if not np.all(np.isfinite(times)):
        raise ValueError(f"--map-times-s must be finite numbers of seconds, got {words}")
    steps = np.diff(times)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0)) + 1
        raise ValueError(
            f"--map-times-s must be strictly increasing; time {k} ({times[k]} s) does not "
            f"follow {times[k - 1]} s"
        )
    return times


def check_output_path(out: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that would overwrite or go inside an input, or has no directory.

    Parameters
    ----------
    out : str or Path
        The output file.
    inputs : iterable of str or Path
        Every file the analysis reads (frames and their data files, PONI, TOML, mask, ...).

    Raises
    ------
    ValueError
        ``out`` is (or resolves to, or is a hard link of) an input or lies inside one; its
        parent directory does not exist or cannot be written; ``out`` is a directory.
    """
    out = Path(out)
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: directory {out.parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: directory {out.parent} is not writable")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name (.nxs)")
    resolved = out.resolve()
    for item in inputs:
        source = Path(item).resolve()
        same = resolved == source or (out.exists() and source.exists() and out.samefile(source))
        if same or source in resolved.parents:
            raise ValueError(
                f"--out {out} would overwrite the input {item}; write the products to "
                "another file (even --overwrite never replaces an input)"
            )
