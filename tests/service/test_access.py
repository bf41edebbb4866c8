"""Access matrix against a real server process: who may read, write, delete and register.

Experiments of two proposals (``pA``, ``pB``) are stored by the admin; then every
identity (anonymous, reader of pA, reader of pB, the beamline writer, the admin) tries
each operation on pA's experiment over HTTP. Tiled answers 401 when the key lacks the
scope, 404 when the node is invisible to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from opmap.callbacks.sealing import seal_run
from opmap.service import ServerHandle, create_key, revoke_key, start_server_subprocess
from opmap.settings import OpmapSettings

pytestmark = pytest.mark.timeout(240)

A_ARRAY = "raw/runA/primary/x"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    settings = OpmapSettings(data_dir=tmp_path_factory.mktemp("access"))
    with start_server_subprocess(settings) as handle:
        admin = _client(handle, handle.admin_key)
        raw = admin.create_container("raw")
        admin.create_container("processed")
        for proposal in ("pA", "pB"):
            run = raw.create_container(f"run{proposal[-1]}", access_tags=[proposal])
            run.create_container("primary").write_array(np.arange(3), key="x")
        raw.create_container("untagged").write_array(np.arange(2), key="y")
        sealed = raw.create_container("runSealed", access_tags=["pA"])
        sealed.create_container("primary").write_array(np.arange(3), key="x")
        seal_run(raw, "runSealed")
        yield handle


@pytest.fixture(scope="module")
def keys(server: ServerHandle) -> dict[str, str | None]:
    settings = server.settings
    return {
        "anonymous": None,
        "reader A": create_key(settings, "alice", "reader", proposals=["pA"]),
        "reader B": create_key(settings, "bob", "reader", proposals=["pB"]),
        "writer": server.api_key,
        "admin": server.admin_key,
    }


def _client(server: ServerHandle, key: str) -> object:
    from tiled.client import from_uri

    return from_uri(server.url, api_key=key)


def _request(server: ServerHandle, key: str | None, method: str, path: str, **kw: object) -> int:
    headers = {} if key is None else {"Authorization": f"Apikey {key}"}
    return httpx.request(method, f"{server.url}/api/v1/{path}", headers=headers, **kw).status_code


def _read(server: ServerHandle, key: str | None) -> int:
    return _request(server, key, "GET", f"array/full/{A_ARRAY}")


def _write(server: ServerHandle, key: str | None) -> int:
    body = {"metadata": {"touched": True}}
    return _request(server, key, "PUT", "metadata/raw/runA", json=body)


def _register(server: ServerHandle, key: str | None) -> int:
    body = {
        "structure_family": "container",
        "metadata": {},
        "specs": [],
        "data_sources": [],
        "access_tags": ["pA"],
    }
    return _request(server, key, "POST", "metadata/raw", json=body)


def _delete(server: ServerHandle, key: str | None) -> int:
    from tiled.client import from_uri

    run = from_uri(server.url, api_key=server.admin_key)["raw"]["runA"]
    if "victim" not in run:
        run.create_container("victim")
    return _request(server, key, "DELETE", "metadata/raw/runA/victim")


# (read, write, delete, register) on proposal A's experiment.
MATRIX = {
    "anonymous": (401, 401, 401, 401),
    "reader A": (200, 401, 401, 401),
    "reader B": (404, 401, 401, 401),
    "writer": (200, 200, 401, 200),
    "admin": (200, 200, 200, 200),
}


@pytest.mark.parametrize("who", list(MATRIX))
def test_access_matrix_on_proposal_a(
    server: ServerHandle, keys: dict[str, str | None], who: str
) -> None:
    key = keys[who]
    got = tuple(op(server, key) for op in (_read, _write, _delete, _register))
    assert got == MATRIX[who]


def test_a_reader_lists_only_its_proposal(
    server: ServerHandle, keys: dict[str, str | None]
) -> None:
    listing = httpx.get(
        f"{server.url}/api/v1/search/raw",
        headers={"Authorization": f"Apikey {keys['reader A']}"},
    ).json()
    seen = {entry["id"] for entry in listing["data"]}
    assert "runA" in seen and not seen & {"runB", "untagged"}
    assert _request(server, keys["reader A"], "GET", "array/full/raw/untagged/y") == 404


def test_a_restricted_writer_cannot_tag_another_proposal(server: ServerHandle) -> None:
    writer_a = create_key(server.settings, "cell-rig", "writer", proposals=["pA"])
    assert _register(server, writer_a) == 200
    body = {"structure_family": "container", "metadata": {}, "specs": [], "data_sources": []}
    tagged_b = body | {"access_tags": ["pB"]}
    assert _request(server, writer_a, "POST", "metadata/raw", json=tagged_b) == 403
    assert _request(server, writer_a, "GET", "metadata/raw/runB") == 404


def test_only_an_admin_may_retag_a_stored_node(
    server: ServerHandle, keys: dict[str, str | None]
) -> None:
    retag = {"metadata": {}, "access_tags": ["pB"]}
    assert _request(server, keys["writer"], "PUT", "metadata/raw/runA", json=retag) == 403


def test_reader_keys_cannot_mint_keys(server: ServerHandle, keys: dict[str, str | None]) -> None:
    body = {"scopes": ["inherit"], "expires_in": 600}
    assert _request(server, keys["reader A"], "POST", "auth/apikey", json=body) == 401


def test_revoked_and_expired_keys_are_refused(server: ServerHandle) -> None:
    key = create_key(server.settings, "carol", "reader", proposals=["pA"])
    assert _read(server, key) == 200
    revoke_key(server.settings, key[:8])
    assert _read(server, key) == 401
    short = create_key(server.settings, "carol", "reader", proposals=["pA"])
    short_lived = create_key(
        server.settings, "dave", "reader", proposals=["pA"], expires_in=timedelta(seconds=1)
    )
    assert _read(server, short) == 200
    import time

    time.sleep(1.5)
    assert _read(server, short_lived) == 401


def test_admin_deletions_are_logged_with_the_principal(
    server: ServerHandle, keys: dict[str, str | None]
) -> None:
    assert _delete(server, keys["admin"]) == 200
    log = Path(server.log_file).read_text()
    assert "('admin') - \"DELETE /api/v1/metadata/raw/runA/victim" in log


def test_products_tagged_with_a_proposal_are_read_by_its_readers_only(
    server: ServerHandle, keys: dict[str, str | None]
) -> None:
    from opmap.analysis.products import LabelledArray, Products
    from opmap.callbacks.tiled_products import TiledProductWriter
    from opmap.callbacks.tiled_writer import ensure_layout

    processed = ensure_layout(server.client())["processed"]
    writer = TiledProductWriter(processed, "cell-7", proposal="pA")
    thickness = LabelledArray(np.array([0.0, 0.4]), ("map",), "um")
    writer.write_products(Products(arrays={"li_thickness": thickness}))
    path = f"array/full/processed/cell-7/{writer.version}/li_thickness"
    assert _request(server, keys["reader A"], "GET", path) == 200
    assert _request(server, keys["reader B"], "GET", path) == 404
    assert _request(server, keys["reader B"], "GET", "metadata/processed/cell-7") == 404


# (write metadata, write data, add a node) inside proposal A's sealed run: only the admin;
# the writer has the scopes but not on this node (403)
SEALED_MATRIX = {
    "reader A": (401, 401, 401),
    "writer": (403, 403, 403),
    "admin": (200, 200, 200),
}


@pytest.mark.parametrize("who", list(SEALED_MATRIX))
def test_a_sealed_run_can_be_changed_by_an_admin_only(
    server: ServerHandle, keys: dict[str, str | None], who: str
) -> None:
    key = keys[who]
    metadata = {"metadata": {"touched": True}}
    got_metadata = _request(server, key, "PUT", "metadata/raw/runSealed", json=metadata)
    data = np.array([7, 7, 7]).tobytes()
    headers = {"Content-Type": "application/octet-stream"}
    if key is not None:
        headers["Authorization"] = f"Apikey {key}"
    got_data = httpx.put(
        f"{server.url}/api/v1/array/full/raw/runSealed/primary/x", content=data, headers=headers
    ).status_code
    node = {"structure_family": "container", "metadata": {}, "specs": [], "data_sources": []}
    got_node = _request(server, key, "POST", "metadata/raw/runSealed", json=node)
    assert (got_metadata, got_data, got_node) == SEALED_MATRIX[who]
    if who != "admin":  # the stored values are untouched
        stored = _client(server, server.admin_key)["raw"]["runSealed"]["primary"]["x"].read()
        np.testing.assert_array_equal(stored, np.arange(3))


def _one_map(n_maps: int) -> object:
    """Products of ``n_maps`` maps: a c map grown live and a per-experiment scalar."""
    from opmap.analysis.products import LabelledArray, Products

    c_perp = LabelledArray(np.full((n_maps, 2, 3), 4.2), ("map", "z", "x"), "angstrom")
    tracks = LabelledArray(np.array([1.0]), ("track",), "")
    return Products(arrays={"c_perp": c_perp, "track_class": tracks})


def _version_writes(server: ServerHandle, key: str, experiment: str, version: str) -> tuple:
    """(metadata, data, new table) writes of ``key`` into a stored product version."""
    base = f"processed/{experiment}/{version}"
    got_metadata = _request(server, key, "PUT", f"metadata/{base}", json={"metadata": {"x": 1}})
    headers = {"Content-Type": "application/octet-stream", "Authorization": f"Apikey {key}"}
    got_data = httpx.put(
        f"{server.url}/api/v1/array/full/{base}/c_perp",
        content=np.zeros((1, 2, 3)).tobytes(),
        headers=headers,
    ).status_code
    node = {"structure_family": "container", "metadata": {}, "specs": [], "data_sources": []}
    got_node = _request(server, key, "POST", f"metadata/{base}-tables", json=node)
    return got_metadata, got_data, got_node


def test_a_finished_product_version_is_sealed_against_the_writer(server: ServerHandle) -> None:
    from opmap.callbacks.live import ProductPublisher
    from opmap.callbacks.sealing import is_sealed
    from opmap.callbacks.tiled_writer import ensure_layout

    processed = ensure_layout(server.client())["processed"]
    publisher = ProductPublisher(processed, "cell-8", {"fit": "pv"}, live_tables=())
    publisher.publish_map(_one_map(1), "raw-0", {}, {"time_s": np.array([0.0, 1.0])})
    version = publisher.writer.version
    # while the experiment runs the writer key grows the version
    assert not is_sealed(processed["cell-8"][version].metadata)
    assert _request(server, server.api_key, "GET", f"metadata/processed/cell-8/{version}") == 200
    publisher.finish(_one_map(1))  # the experiment ended: the products are final
    assert is_sealed(processed["cell-8"][version].metadata)
    assert is_sealed(processed["cell-8"][f"{version}-tables"].metadata)
    assert _version_writes(server, server.api_key, "cell-8", version) == (403, 403, 403)
    assert _version_writes(server, server.admin_key, "cell-8", version) == (200, 200, 200)
    read = _client(server, server.api_key)["processed"]["cell-8"][version]["c_perp"].read()
    np.testing.assert_array_equal(read, np.zeros((1, 2, 3)))  # the admin's write only


def test_a_newer_live_version_seals_the_earlier_ones(server: ServerHandle) -> None:
    from opmap.callbacks.live import ProductPublisher
    from opmap.callbacks.sealing import is_sealed
    from opmap.callbacks.tiled_products import TiledProductWriter
    from opmap.callbacks.tiled_writer import ensure_layout

    processed = ensure_layout(server.client())["processed"]
    # a worker's version, cut short by its death (never finished, never sealed)
    first = TiledProductWriter(processed, "cell-9")
    first.append_map({"c_perp": _one_map(1).arrays["c_perp"]})
    assert not is_sealed(processed["cell-9"][first.version].metadata)
    restarted = ProductPublisher(processed, "cell-9", {}, live_tables=())
    restarted.publish_map(_one_map(1), "raw-0", {}, {})
    newer = restarted.writer.version
    assert (first.version, newer) == ("v1", "v2")
    assert is_sealed(processed["cell-9"]["v1"].metadata)
    assert _version_writes(server, server.api_key, "cell-9", "v1")[:2] == (403, 403)
    with pytest.raises(ValueError, match="sealed"):  # not adopted by a resume either
        TiledProductWriter.reopen(processed, "cell-9", "v1")
    # the new version still grows under the writer key until it finishes
    restarted.publish_map(_one_map(2), "raw-1", {}, {})
    assert restarted.writer.committed.maps == 2
    assert not is_sealed(processed["cell-9"][newer].metadata)


def _writer_changes(server: ServerHandle, path: str) -> tuple[int, int]:
    """(metadata, data) writes of the writer key at ``raw/<path>/primary``: a metadata key
    set (to the same value each time) and ``x`` grown by 3 at its extent (the writer key
    may only append)."""
    key = server.api_key
    got_metadata = _request(
        server, key, "PUT", f"metadata/raw/{path}/primary", json={"metadata": {"n": 1}}
    )
    extent = _client(server, server.admin_key)["raw"][path]["primary"]["x"].shape[0]
    got_data = httpx.patch(
        f"{server.url}/api/v1/array/full/raw/{path}/primary/x",
        params={"offset": extent, "shape": 3, "extend": "true"},
        content=np.array([5, 5, 5]).tobytes(),
        headers={"Content-Type": "application/octet-stream", "Authorization": f"Apikey {key}"},
    ).status_code
    return got_metadata, got_data


def test_a_run_sealed_after_a_first_request_is_refused_on_the_next_one(
    server: ServerHandle,
) -> None:
    """The server caches "not sealed" per node: sealing a run must still reach its
    children at once (and unsealing by the admin too)."""
    admin_raw = _client(server, server.admin_key)["raw"]
    run = admin_raw.create_container("runLate", access_tags=["pA"])
    run.create_container("primary").write_array(np.arange(3), key="x")
    assert _writer_changes(server, "runLate") == (200, 200)
    assert _writer_changes(server, "runLate") == (200, 200)  # answered from the cache
    seal_run(server.client()["raw"], "runLate")  # the writer seals what it stored
    assert _writer_changes(server, "runLate") == (403, 403)
    admin_raw["runLate"].update_metadata(metadata={"opmap_sealed": False})
    assert _writer_changes(server, "runLate") == (200, 200)
