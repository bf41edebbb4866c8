"""Sealing a stored raw run: after it, only an admin key may write to it.

The opmap server's access policy (``opmap.service.ProposalAccessPolicy``) refuses every
write, node creation and registration inside a node whose metadata, or an ancestor's, has
``SEALED_KEY`` true, unless the key is an admin's. `ValidatedTiledWriter` seals each run
once Tiled holds all of its documents and the run has been validated, so the beamline
writer key cannot overwrite what it stored. Servers without that policy (an in-process
app, a plain ``tiled serve``) keep the marker as ordinary metadata.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SEALED_KEY", "is_sealed", "seal_run"]

#: Metadata key of a sealed node (value ``True``).
SEALED_KEY = "opmap_sealed"


def seal_run(runs: Any, run_uid: str) -> None:
    """Seal run ``run_uid`` of the catalog ``runs`` (a Tiled container client)."""
    runs[run_uid].update_metadata(metadata={SEALED_KEY: True})


def is_sealed(metadata: Any) -> bool:
    """Whether ``metadata`` (a node's) seals it.

    Examples
    --------
    >>> is_sealed({"opmap_sealed": True}), is_sealed({"opmap_sealed": "yes"}), is_sealed(None)
    (True, False, False)
    """
    return hasattr(metadata, "get") and metadata.get(SEALED_KEY) is True
