"""The PostgreSQL catalog (several writers), against a throwaway local cluster."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tiled.client import Context, from_context

from opmap.callbacks.tiled_writer import ensure_layout
from opmap.service import build_in_process_app, free_port
from opmap.settings import OpmapSettings

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

_TOOLS = ("initdb", "pg_ctl", "createdb")


def _as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; run the throwaway cluster as 'nobody' then.
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgresql_uri(tmp_path: Path) -> Iterator[str]:
    if any(shutil.which(tool) is None for tool in _TOOLS):
        pytest.skip("PostgreSQL server tools (initdb, pg_ctl, createdb) are not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    # As root the cluster belongs to 'nobody', who cannot enter pytest's private tmp_path.
    root = Path(tempfile.mkdtemp(prefix="opmap-pg-")) if os.geteuid() == 0 else tmp_path
    if os.geteuid() == 0:
        shutil.chown(root, user="nobody")
    port = free_port()
    data = root / "cluster"

    def run(*command: str) -> None:
        subprocess.run(_as_postgres_user(list(command)), check=True, capture_output=True)

    try:
        run("initdb", "-D", str(data), "-U", "opmap", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        run("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
        try:
            run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "opmap", "opmap")
            yield f"postgresql://opmap@127.0.0.1:{port}/opmap"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        if root != tmp_path:
            shutil.rmtree(root)


@pytest.mark.slow
def test_postgresql_catalog_and_table_store_hold_arrays_and_tables(
    tmp_path: Path, postgresql_uri: str
) -> None:
    settings = OpmapSettings(
        data_dir=tmp_path, catalog_uri=postgresql_uri, table_store_uri=postgresql_uri
    )
    table = {"time_s": [0.0, 1.5], "potential_v": [3.9, 4.1]}
    with Context.from_app(build_in_process_app(settings)) as context:
        processed = ensure_layout(from_context(context))["processed"]
        processed.write_array(np.arange(6).reshape(2, 3), key="c_map")
        processed.write_table(table, key="echem")
    # A second app on the same database sees what the first wrote: state is in PostgreSQL.
    with Context.from_app(build_in_process_app(settings)) as context:
        processed = from_context(context)["processed"]
        np.testing.assert_array_equal(processed["c_map"].read(), np.arange(6).reshape(2, 3))
        assert processed["echem"].read()["potential_v"].tolist() == [3.9, 4.1]
    assert not (tmp_path / "catalog.db").exists(), "no SQLite catalog was used"
