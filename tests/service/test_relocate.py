"""A moved or copied data directory serves again after ``opmap relocate`` (issue 13 §7).

The rehearsal's data directory (raw runs with detector files, event tables, products) is
copied elsewhere, as a restore from an archive would; the copy is refused by the server
until ``opmap relocate`` rewrites its catalog, then reads back through a real Tiled client
the same frames and products as the original, from its own files.
"""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

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


@pytest.mark.timeout(900)  # the shared rehearsal and two server starts on a loaded machine
def test_a_copied_data_dir_is_refused_then_relocated_and_served(
    rehearsal, rehearsal_server, copied, capsys
):
    assert recorded_data_dir(copied).resolve() == rehearsal.data_dir.resolve()
    with pytest.raises(ValueError, match=r"was moved: .*opmap relocate"):
        start_server_subprocess(OpmapSettings(data_dir=copied))
    assert main(["relocate", str(copied)]) == 0
    assert "asset paths rewritten" in capsys.readouterr().out
    uris = _asset_uris(copied)
    assert uris and all(str(copied) in uri for uri in uris)
    assert main(["relocate", str(copied)]) == 0  # again: nothing left to rewrite
    assert "nothing to rewrite" in capsys.readouterr().out

    original = rehearsal_server.client()
    uid, experiment = rehearsal.map_uids[0], rehearsal.experiment_id
    with start_server_subprocess(OpmapSettings(data_dir=copied), startup_timeout_s=300) as server:
        client = server.client()
        frames = client["raw"][uid]["primary"]["eiger"][:2]
        expected = original["raw"][uid]["primary"]["eiger"][:2]
        np.testing.assert_array_equal(frames, expected)
        assert frames.shape[0] == 2 and frames.max() > 0
        table = client["raw"][uid]["primary"].read()
        assert len(table["eiger"]) == len(original["raw"][uid]["primary"].read()["eiger"])
        c_perp = client["processed"][experiment]["v1"]["c_perp"][:]
        np.testing.assert_array_equal(c_perp, original["processed"][experiment]["v1"]["c_perp"][:])
        assert np.isfinite(c_perp).sum() >= 10


def test_relocate_refuses_a_folder_without_catalog(tmp_path, capsys):
    assert main(["relocate", str(tmp_path)]) == 2
    assert "holds no opmap SQLite catalog" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
