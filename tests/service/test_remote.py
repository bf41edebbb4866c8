"""Remote access to products on a real opmap server subprocess: client, databroker, HTTP.

One server for the module (startup costs ~10 s on a shared machine); products are written
through the TiledProductWriter, as the live analysis does.
"""

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow.ipc
import pytest
from tiled.client import from_uri

from opmap.analysis.products import LabelledArray, Products
from opmap.callbacks.tiled_products import TiledProductWriter
from opmap.callbacks.tiled_writer import ensure_layout
from opmap.cli import build_parser, profile_directory
from opmap.remote import array_info, fetch_array, fetch_table, read_map
from opmap.service import ServerHandle, start_server_subprocess
from opmap.settings import OpmapSettings

pytestmark = pytest.mark.slow

C_PATH = "processed/cell-7/v1/c_perp"
GRAINS_PATH = "processed/cell-7/v1-tables/grains"
N_MAPS, N_Z, N_X = 4, 6, 9


def _c_maps() -> np.ndarray:
    """c in Å, a distinct known value in every (map, z, x) cell."""
    m, z, x = np.meshgrid(np.arange(N_MAPS), np.arange(N_Z), np.arange(N_X), indexing="ij")
    return (14.0 + 0.1 * m + 0.01 * z + 0.001 * x).astype(np.float32)


GRAINS = {
    "map": np.array([0, 0, 1, 2, 3]),
    "grain_id": np.array([1, 2, 1, 3, 4]),
    "chi_deg": np.array([12.5, 75.0, 13.0, 200.25, 330.0]),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    settings = OpmapSettings(data_dir=tmp_path_factory.mktemp("opmap-remote"))
    with start_server_subprocess(settings) as handle:
        processed = ensure_layout(handle.client())["processed"]
        writer = TiledProductWriter(processed, "cell-7", raw_uids=["run-uid-1"])
        c_maps = _c_maps()
        for index in range(N_MAPS):  # grown live, map by map
            c = LabelledArray(c_maps[index : index + 1], ("map", "z", "x"), "angstrom")
            writer.append_map({"c_perp": c})
        half = {name: values[:2] for name, values in GRAINS.items()}
        rest = {name: values[2:] for name, values in GRAINS.items()}
        writer.append_rows("grains", half)
        writer.append_rows("grains", rest)
        writer.write_products(
            Products(tables={"counts": {"map": np.arange(3), "total": np.array([2, 1, 1])}})
        )
        yield handle


def test_tiled_client_reads_a_c_map_slice_and_the_grain_table(server: ServerHandle) -> None:
    client = from_uri(server.url, api_key=server.api_key)
    node = client[C_PATH]
    assert node.shape == (N_MAPS, N_Z, N_X) and node.structure().dims == ("map", "z", "x")
    assert node.metadata["units"] == "angstrom"
    np.testing.assert_array_equal(node[2], _c_maps()[2])
    table = client[GRAINS_PATH].read()
    for column, values in GRAINS.items():
        np.testing.assert_array_equal(table[column].to_numpy(), values)


def test_read_map_fetches_one_map_through_the_tiled_client(server: ServerHandle) -> None:
    node = from_uri(server.url, api_key=server.api_key)[C_PATH]
    expected = _c_maps()
    got = read_map(node, 2)
    assert got.dtype == np.float32 and got.shape == (N_Z, N_X)
    np.testing.assert_array_equal(got, expected[2])
    np.testing.assert_array_equal(read_map(node, -1), expected[-1])
    with pytest.raises(ValueError, match="index must be an integer"):
        read_map(node, 1.5)  # type: ignore[arg-type]
    with pytest.raises(httpx.HTTPStatusError):
        read_map(node, N_MAPS + 5)


def test_http_serves_the_c_map_as_json_and_raw_bytes(server: ServerHandle) -> None:
    expected = _c_maps()
    as_json = fetch_array(server.url, C_PATH, server.api_key, "json", slice_="1")
    np.testing.assert_allclose(as_json, expected[1], rtol=1e-7)
    assert as_json.shape == (N_Z, N_X)
    info = array_info(server.url, C_PATH, server.api_key)
    assert info == ((N_MAPS, N_Z, N_X), np.dtype("float32"))
    with httpx.Client() as http:
        raw = fetch_array(server.url, C_PATH, server.api_key, slice_="3", info=info, client=http)
        window = fetch_array(server.url, C_PATH, server.api_key, slice_="0:2,:,4", client=http)
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw, expected[3])
    np.testing.assert_array_equal(window, expected[0:2, :, 4])
    np.testing.assert_array_equal(fetch_array(server.url, C_PATH, server.api_key), expected)


def test_http_serves_the_grain_table_as_csv(server: ServerHandle) -> None:
    url = f"{server.url}/api/v1/table/full/{GRAINS_PATH}"
    response = httpx.get(url, params={"format": "text/csv"}, headers=_key(server))
    assert response.status_code == 200
    assert response.text.splitlines()[0].split(",") == ["map", "grain_id", "chi_deg"]
    table = fetch_table(server.url, GRAINS_PATH, server.api_key)
    for column, values in GRAINS.items():
        np.testing.assert_array_equal(table[column].to_numpy(), values)
    counts = fetch_table(server.url, "processed/cell-7/v1-tables/counts", server.api_key)
    assert counts["total"].tolist() == [2, 1, 1]
    arrow = httpx.get(url, headers=_key(server) | {"Accept": "application/vnd.apache.arrow.file"})
    assert pyarrow.ipc.open_file(arrow.content).read_all().column("chi_deg").to_pylist() == (
        GRAINS["chi_deg"].tolist()
    )


def test_http_serves_a_c_map_slice_as_csv(server: ServerHandle) -> None:
    url = f"{server.url}/api/v1/array/full/{C_PATH}"
    response = httpx.get(url, params={"slice": "2", "format": "text/csv"}, headers=_key(server))
    assert response.status_code == 200
    parsed = np.loadtxt(response.text.splitlines(), delimiter=",")
    np.testing.assert_allclose(parsed, _c_maps()[2], rtol=1e-6)


def test_http_without_or_with_a_wrong_key_is_refused_with_401(server: ServerHandle) -> None:
    url = f"{server.url}/api/v1/array/full/{C_PATH}"
    assert httpx.get(url, params={"slice": "0"}).status_code == 401
    wrong = {"Authorization": "Apikey 0123456789abcdef0123"}
    assert httpx.get(url, params={"slice": "0"}, headers=wrong).status_code == 401
    with pytest.raises(PermissionError, match="401: missing or wrong API key"):
        fetch_array(server.url, C_PATH, None, "json")
    with pytest.raises(PermissionError, match="401"):
        fetch_table(server.url, GRAINS_PATH, "0123456789abcdef0123")
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        fetch_array(server.url, "processed/cell-7/v9/c_perp", server.api_key, "json")


def test_databroker_from_profile_reaches_runs_and_products(
    server: ServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILED_PROFILES", str(tmp_path / "profiles"))
    settings = server.settings
    keyed = _run_profile_cmd(["--data-dir", str(settings.data_dir), "--url", server.url])
    from_env = _run_profile_cmd(["--name", "opmap-env", "--url", server.url, "--key-from-env"])
    assert keyed.parent == from_env.parent == tmp_path / "profiles"
    assert stat.S_IMODE(keyed.stat().st_mode) == 0o600, "the profile holds the API key"
    assert server.api_key not in from_env.read_text()

    # A fresh interpreter, as a user's session: Tiled reads TILED_PROFILES at import.
    script = (
        "import json, os, databroker\n"
        "keyed = databroker.from_profile('opmap')\n"
        f"c = keyed[{C_PATH!r}][1].tolist()\n"
        "top = sorted(keyed)\n"
        f"os.environ['TILED_API_KEY'] = {server.api_key!r}\n"
        f"grains = databroker.from_profile('opmap-env')[{GRAINS_PATH!r}].read()\n"
        "print(json.dumps({'c': c, 'top': top, 'grain_id': grains['grain_id'].tolist()}))\n"
    )
    env = os.environ | {"TILED_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TILED_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(answer["c"], _c_maps()[1], rtol=1e-7)
    assert answer["top"] == ["processed", "raw"]
    assert answer["grain_id"] == GRAINS["grain_id"].tolist()


def _key(server: ServerHandle) -> dict[str, str]:
    return {"Authorization": f"Apikey {server.api_key}"}


def _run_profile_cmd(argv: list[str]) -> Path:
    args = build_parser().parse_args(["profile", "install", *argv])
    assert args.func(args) == 0
    return profile_directory() / f"{args.name}.yml"
