"""Dectris files as a real DCU's file writer writes them, for the reader tests.

A master ``<stem>_master.h5`` whose ``/entry/data/data_000001`` … are external links to
``<stem>_data_000001.h5:/entry/data/data`` (bitshuffle-LZ4, one frame per chunk) of
``per_file`` frames each, the last one shorter, and nothing else: no stacked
``/entry/data/data``, no ``/entry/opmap``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from opmap.devices import DECTRIS_LINKS_MIMETYPE, dectris_links_parameters


def write_links_master(folder: Path, stem: str, stack: np.ndarray, per_file: int) -> Path:
    """Write ``stack`` (n, H, W) as ``<stem>_master.h5`` + data files; return the master."""
    master = folder / f"{stem}_master.h5"
    with h5py.File(master, "w") as m:
        group = m.create_group("entry/data")
        for number, start in enumerate(range(0, len(stack), per_file), start=1):
            name = f"{stem}_data_{number:06d}.h5"
            with h5py.File(folder / name, "w") as f:
                f.create_dataset(
                    "entry/data/data",
                    data=stack[start : start + per_file],
                    chunks=(1, *stack.shape[1:]),
                    **hdf5plugin.Bitshuffle(cname="lz4"),
                )
            group[f"data_{number:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def links_resource(master: Path, per_file: int, uid: str = "r1") -> dict:
    """The stream resource ``SimplonEiger`` emits for ``master``."""
    return {
        "uid": uid,
        "data_key": "det",
        "uri": f"file://localhost{master}",
        "mimetype": DECTRIS_LINKS_MIMETYPE,
        "parameters": dectris_links_parameters(per_file),
    }
