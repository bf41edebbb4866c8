"""Where products live in Tiled: ``processed/<experiment_id>/<version>``, versions never reused.

Each analysis (live, or a replay with ``opmap analyze``) of one experiment writes a new
version container ``v1``, ``v2``, ... under the experiment's container. A version is created
with the ``409 Conflict`` of the server as the arbiter, so two writers starting at once get
two different versions and nothing already written is ever replaced.

A version whose products are final is *sealed* (:func:`seal_version`: the version and its
``-tables`` container get ``opmap_sealed``, `opmap.callbacks.sealing`): on the opmap server
only an admin key may then change it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tiled.client.container import Container
from tiled.client.utils import ClientError

import opmap

from ..sealing import is_sealed, seal_node
from ._dataset import DATASET, dataset_attrs

__all__ = [
    "ROLE_KEY",
    "TABLES_SUFFIX",
    "create_version",
    "experiment_container",
    "next_version",
    "provenance",
    "seal_earlier_versions",
    "seal_version",
    "tables_key",
    "validate_key",
    "versions",
]

#: Metadata key that told readers what a node was (``array``, ``coord``, ``table``) in
#: versions written before products became xarray Datasets; still honoured when reading.
ROLE_KEY = "opmap_role"
#: The tables of version ``vN`` live beside it in ``vN-tables`` (see :func:`tables_key`).
TABLES_SUFFIX = "-tables"

_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_PATTERN = re.compile(r"v([1-9][0-9]*)")
_HTTP_CONFLICT = 409
_MAX_CREATE_ATTEMPTS = 20


def validate_key(name: str, value: str) -> str:
    """Check that ``value`` can be a Tiled key (1–128 of ``A-Za-z0-9._-``, no leading dot).

    Raises
    ------
    ValueError
        Naming the parameter ``name`` and the allowed characters.

    Examples
    --------
    >>> validate_key("experiment_id", "lco-2026-03")
    'lco-2026-03'
    >>> validate_key("experiment_id", "a/b")
    Traceback (most recent call last):
    ...
    ValueError: experiment_id must be 1-128 characters of A-Za-z0-9._- ... got 'a/b'
    """
    if not isinstance(value, str) or not _KEY_PATTERN.fullmatch(value):
        raise ValueError(
            f"{name} must be 1-128 characters of A-Za-z0-9._- starting with a letter or "
            f"digit; got {value!r}"
        )
    return value


def tables_key(version: str) -> str:
    """Key of the container beside ``version`` that holds its tables.

    A version container is an ``xarray_dataset``: every child must be an array, so the
    grain, track and electrochemistry tables live in a sibling container.

    Examples
    --------
    >>> tables_key("v2")
    'v2-tables'
    """
    return f"{version}{TABLES_SUFFIX}"


def versions(processed: Container, experiment_id: str) -> list[str]:
    """The versions stored for ``experiment_id``, oldest first (``["v1", "v2", ...]``)."""
    validate_key("experiment_id", experiment_id)
    if experiment_id not in processed:
        return []
    found = (_VERSION_PATTERN.fullmatch(key) for key in processed[experiment_id])
    return [f"v{n}" for n in sorted(int(m.group(1)) for m in found if m)]


def next_version(processed: Container, experiment_id: str) -> str:
    """The name the next analysis of ``experiment_id`` gets: ``"v1"``, then ``"v2"``, ...

    It is one more than the highest version stored, so a deleted version's name is never
    reused while a later one exists.
    """
    stored = versions(processed, experiment_id)
    return f"v{int(stored[-1][1:]) + 1}" if stored else "v1"


def experiment_container(processed: Container, experiment_id: str) -> Container:
    """Return the container of ``experiment_id`` under ``processed``, creating it if needed."""
    validate_key("experiment_id", experiment_id)
    if experiment_id not in processed:
        try:
            processed.create_container(experiment_id, metadata={"experiment_id": experiment_id})
        except ClientError as error:
            if error.response.status_code != _HTTP_CONFLICT:
                raise  # another writer creating it at the same moment is the only expected case
    return processed[experiment_id]


def create_version(
    processed: Container, experiment_id: str, metadata: Mapping[str, Any]
) -> tuple[str, Container]:
    """Create the next free version container of ``experiment_id``; return (version, node).

    A version taken meanwhile by another writer (HTTP 409) makes it try the next name.
    The container carries Tiled's ``xarray_dataset`` spec and, under ``attrs``, the
    Dataset attributes (:func:`~._dataset.dataset_attrs`).
    """
    experiment = experiment_container(processed, experiment_id)
    for _ in range(_MAX_CREATE_ATTEMPTS):
        version = next_version(processed, experiment_id)
        try:
            stored = {**metadata, "version": version}
            stored["attrs"] = dataset_attrs(stored)
            node = experiment.create_container(version, metadata=stored, specs=[DATASET])
        except ClientError as error:
            if error.response.status_code != _HTTP_CONFLICT:
                raise
            continue
        return version, node
    raise RuntimeError(
        f"could not create a new version of {experiment_id!r}: "
        f"{_MAX_CREATE_ATTEMPTS} names were taken by concurrent writers"
    )


def provenance(
    experiment_id: str, raw_uids: Sequence[str], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """The metadata linking a version to its raw runs, analysis parameters and opmap version."""
    if isinstance(raw_uids, str):
        raise ValueError(f"raw_uids must be a sequence of run uids, not the string {raw_uids!r}")
    return {
        "experiment_id": experiment_id,
        "raw_uids": [str(uid) for uid in raw_uids],
        "analysis_parameters": dict(parameters),
        "opmap_version": opmap.__version__,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def seal_version(processed: Container, experiment_id: str, version: str) -> list[str]:
    """Seal a version and its tables (`opmap.callbacks.sealing`): its products are final.

    The tables container is sealed first, so a version found sealed has sealed tables.
    Nodes sealed already are left alone.

    Returns
    -------
    list of str
        The keys sealed by this call (``[]`` when all were sealed before).
    """
    experiment = processed[validate_key("experiment_id", experiment_id)]
    keys = [key for key in (tables_key(version), version) if key in experiment]
    if version not in keys:
        raise KeyError(f"{experiment_id}/{version} is not stored")
    return [key for key in keys if seal_node(experiment[key])]


def seal_earlier_versions(processed: Container, experiment_id: str, version: str) -> list[str]:
    """Seal every version of ``experiment_id`` older than ``version`` not sealed yet.

    A newer live version supersedes them (e.g. a restarted analysis worker starts one):
    their writers are gone. Returns the versions sealed by this call.
    """
    number = int(version[1:])
    sealed = []
    for older in versions(processed, experiment_id):
        if int(older[1:]) < number and not is_sealed(processed[experiment_id][older].metadata):
            seal_version(processed, experiment_id, older)
            sealed.append(older)
    return sealed
