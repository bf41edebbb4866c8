"""A moved or copied data directory serves again after ``opmap relocate`` (issue 13 §7).

The rehearsal's data directory (raw runs with detector files, event tables, products) is
copied elsewhere, as a restore from an archive would; the copy is refused by the server
until ``opmap relocate`` rewrites its catalog, then serves through a real Tiled client,
from its own files, the original's frames (as in its HDF5 files) and products (as the
rehearsal read them back).
"""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from opmap.analysis.frames import open_frames
from opmap.cli import main
from opmap.service import LOCK_FILE_NAME, recorded_data_dir, start_server_subprocess
from opmap.settings import OpmapSettings


@pytest.fixture
def copied(rehearsal, tmp_path):
    target = tmp_path / "archive" / "restored-data"
    shutil.copytree(rehearsal.data_dir, target, ignore=shutil.ignore_patterns(LOCK_FILE_NAME))
    return target


def _asset_uris(data_dir):
    with sqlite3.connect(data_dir / "catalog.db") as db:
        return [row[0] for row in db.execute("SELECT data_uri FROM assets")]


@pytest.mark.timeout(900)  # the shared rehearsal and a server start on a loaded machine
def test_a_copied_data_dir_is_refused_then_relocated_and_served(rehearsal, copied, capsys):
    assert recorded_data_dir(copied).resolve() == rehearsal.data_dir.resolve()
    with pytest.raises(ValueError, match=r"was moved: .*opmap relocate"):
        start_server_subprocess(OpmapSettings(data_dir=copied))
    assert main(["relocate", str(copied)]) == 0
    assert "asset paths rewritten" in capsys.readouterr().out
    uris = _asset_uris(copied)
    assert uris and all(str(copied) in uri for uri in uris)
    assert main(["relocate", str(copied)]) == 0  # again: nothing left to rewrite
    assert "nothing to rewrite" in capsys.readouterr().out

    uid, experiment = rehearsal.map_uids[0], rehearsal.experiment_id
    settings = OpmapSettings(data_dir=copied)
    with start_server_subprocess(settings, startup_timeout_s=300) as server:
        client = server.client()
        eiger = client["raw"][uid]["primary"]["eiger"]
        uri = eiger.data_sources()[0].assets[0].data_uri
        frames = eiger[:2]
        c_perp = client["processed"][experiment]["v1"]["c_perp"][:]
    # served from the copy's own files, equal to the original's frames and products
    assert uri.startswith(f"file://localhost{copied}/detector/")
    original = open_frames(rehearsal.data_dir / "detector" / uri.rpartition("/")[2])
    np.testing.assert_array_equal(frames, original.read(0, 2))
    assert frames.shape[0] == 2 and np.count_nonzero(frames) > 0
    expected = rehearsal.products.arrays["c_perp"].values
    np.testing.assert_array_equal(c_perp, expected)
    assert np.isfinite(c_perp).sum() >= 10


def test_relocate_refuses_a_folder_without_catalog(tmp_path, capsys):
    assert main(["relocate", str(tmp_path)]) == 2
    assert "holds no opmap SQLite catalog" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
