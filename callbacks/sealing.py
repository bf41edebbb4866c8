"""Sealing a stored node (a raw run, a product version): after it, only an admin key may
write to it.

The opmap server's access policy (``opmap.service.ProposalAccessPolicy``) refuses every
write, node creation and registration inside a node whose metadata, or an ancestor's, has
``SEALED_KEY`` true, unless the key is an admin's. What seals:

* raw runs: `ValidatedTiledWriter` seals each run once Tiled holds all of its documents and
  the run has been validated; ``opmap recover`` and ``opmap resume`` seal each run they
  complete from the spool the same way (`opmap.callbacks.spool.recover_spool`);
* product versions (``processed/<experiment>/vN`` and ``vN-tables``): sealed once final
  (`opmap.callbacks.tiled_products.TiledProductWriter.seal`).

So the beamline writer key cannot overwrite what it stored. Servers without that policy
(an in-process app, a plain ``tiled serve``) keep the marker as ordinary metadata.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SEALED_KEY", "is_sealed", "seal_node", "seal_run"]

#: Metadata key of a sealed node (value ``True``).
SEALED_KEY = "opmap_sealed"


def seal_node(node: Any) -> bool:
    """Seal ``node`` (a Tiled client node) unless it is sealed already.

    Returns
    -------
    bool
        True when this call sealed it, False when it was sealed before (nothing is sent:
        a sealed node refuses the writer key's metadata update).
    """
    if is_sealed(node.metadata):
        return False
    node.update_metadata(metadata={SEALED_KEY: True})
    return True


def seal_run(runs: Any, run_uid: str) -> bool:
    """Seal run ``run_uid`` of the catalog ``runs`` (a Tiled container client); see
    `seal_node` for the result."""
    return seal_node(runs[run_uid])


def is_sealed(metadata: Any) -> bool:
    """Whether ``metadata`` (a node's) seals it.

    Examples
    --------
    >>> is_sealed({"opmap_sealed": True}), is_sealed({"opmap_sealed": "yes"}), is_sealed(None)
    (True, False, False)
    """
    return hasattr(metadata, "get") and metadata.get(SEALED_KEY) is True
