"""The server's embedded DuckDB table store keeps to ``OpmapSettings.table_memory_mb`` and
is created with ``OpmapSettings.table_block_kib`` blocks.

DuckDB caches the blocks of the tables it stores up to its ``memory_limit`` (80 % of RAM by
default), so without a limit the server grew with every row an experiment stored; and it
holds the rows appended since its last checkpoint in blocks of the store's block size, at
least one per column (`docs/operations.md`, "Soak").
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

from opmap.service import build_in_process_app, create_duckdb_stores, write_server_config
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


def _block_size(uri: str) -> int:
    """``block_size`` of the DuckDB file the server's table store is connected to."""
    registered = uri.replace("duckdb:///", "duckdb://localhost/", 1)
    with (
        contextlib.closing(get_storage(registered).connect()) as connection,
        contextlib.closing(connection.cursor()) as cursor,
    ):
        cursor.execute("SELECT block_size FROM pragma_database_size()")
        return int(cursor.fetchone()[0])


def test_the_server_creates_its_table_store_with_table_block_kib_blocks(tmp_path: Path) -> None:
    settings = OpmapSettings(data_dir=tmp_path / "d", table_block_kib=32)
    with Context.from_app(build_in_process_app(settings)) as context:
        client = from_context(context)
        schema = pa.schema([("time_s", pa.float64())])
        table = client.create_appendable_table(schema, key="electrochemistry")
        table.append_partition(0, pa.table({"time_s": np.arange(10.0)}))
        assert len(table.read()) == 10
        assert _block_size(settings.table_store_uri) == 32 * 1024


def _rows_held(path: Path, block_kib: int) -> int:
    """Bytes DuckDB holds in memory for 10 000 rows of 41 columns appended in 20 commits."""
    import duckdb

    assert create_duckdb_stores([f"duckdb:///{path}"], block_kib) == [path]
    with duckdb.connect(str(path)) as connection:
        columns = ", ".join(f"c{i} DOUBLE" for i in range(40))
        connection.execute(f"CREATE TABLE t (partition_id INTEGER, {columns})")
        values = ", ".join(["random()"] * 40)
        for commit in range(20):
            connection.execute(f"INSERT INTO t SELECT {commit}, {values} FROM range(500)")
        (held,) = connection.execute(
            "SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'IN_MEMORY_TABLE'"
        ).fetchone()
    return int(held)


def test_small_blocks_hold_the_appended_rows_in_less_memory(tmp_path: Path) -> None:
    data = 10_000 * 41 * 8  # bytes of the rows (3.3 MB): 80 kB per column
    small, default = _rows_held(tmp_path / "s.duckdb", 16), _rows_held(tmp_path / "l.duckdb", 256)
    # DuckDB's default rounds each column up to a 256 KiB block (11.5 MB measured) ...
    assert default >= 41 * 256 * 1024, default
    # ... 16 KiB blocks hold the rows' own size (3.4 MB measured)
    assert small < 1.2 * data and small < default / 3, (small, default)


def test_an_existing_store_keeps_its_blocks_and_a_bad_block_size_is_refused(
    tmp_path: Path,
) -> None:
    import duckdb

    path = tmp_path / "tables.duckdb"
    duckdb.connect(str(path)).close()  # made elsewhere with DuckDB's default blocks
    before = path.read_bytes()
    assert create_duckdb_stores([f"duckdb:///{path}", str(tmp_path)], 16) == []
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="table_block_kib"):
        create_duckdb_stores([f"duckdb:///{tmp_path / 'x.duckdb'}"], 24)
    assert not (tmp_path / "x.duckdb").exists()
    config = write_server_config(OpmapSettings(data_dir=tmp_path / "d")).read_text()
    assert "table_block_kib: 16" in config, "the default block size reaches the server"
    for bad in (8, 24, 512):
        with pytest.raises(ValidationError, match="table_block_kib"):
            OpmapSettings(data_dir=tmp_path / "e", table_block_kib=bad)
