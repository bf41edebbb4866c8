"""The server's embedded DuckDB table store keeps to ``OpmapSettings.table_memory_mb``.

DuckDB caches the blocks of the tables it stores up to its ``memory_limit`` (80 % of RAM by
default), so without a limit the server grew with every row an experiment stored
(`docs/operations.md`, "Soak").
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from tiled.client import Context, from_context
from tiled.storage import get_storage

from opmap.service import build_in_process_app, write_server_config
from opmap.settings import OpmapSettings

MIB = 2**20


def _duckdb_setting(uri: str, name: str) -> str:
    """``current_setting(name)`` of the DuckDB the server's table store is connected to."""
    registered = uri.replace("duckdb:///", "duckdb://localhost/", 1)  # as Tiled registers it
    with (
        contextlib.closing(get_storage(registered).connect()) as connection,
        contextlib.closing(connection.cursor()) as cursor,
    ):
        cursor.execute(f"SELECT current_setting('{name}')")
        return str(cursor.fetchone()[0])


def _mib(setting: str) -> float:
    value, unit = setting.split()
    return float(value) * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}[unit]


def test_tables_written_through_the_server_use_a_duckdb_limited_to_table_memory_mb(
    tmp_path: Path,
) -> None:
    settings = OpmapSettings(data_dir=tmp_path / "d", table_memory_mb=20)
    app = build_in_process_app(settings)
    with Context.from_app(app) as context:
        client = from_context(context)
        schema = pa.schema([("time_s", pa.float64()), ("current_a", pa.float64())])
        table = client.create_appendable_table(schema, key="electrochemistry")
        rows = pa.table({"time_s": np.arange(1000.0), "current_a": np.full(1000, 1e-4)})
        table.append_partition(0, rows)
        assert len(table.read()) == 1000  # stored in DuckDB and read back through Tiled
        limit = _duckdb_setting(settings.table_store_uri, "memory_limit")  # while served
    # DuckDB reports the limit in MiB: 20 MB = 19.07 MiB
    assert _mib(limit) == pytest.approx(20e6 / MIB, abs=0.1), limit


def test_the_generated_config_carries_the_limit_and_a_tiny_one_is_refused(
    tmp_path: Path,
) -> None:
    config = write_server_config(OpmapSettings(data_dir=tmp_path / "d")).read_text()
    assert "table_memory_mb: 64" in config, "the default bound reaches the server"
    with pytest.raises(ValidationError, match="table_memory_mb"):
        OpmapSettings(data_dir=tmp_path / "e", table_memory_mb=8)
