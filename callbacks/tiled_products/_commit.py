"""The commit record of a product version: what readers may trust.

A map is grown by several requests (one per array, then table rows), any of which can fail.
The writer therefore writes every array of a map first and then, in one metadata update,
*commits* it: the version's metadata ``committed`` says how many maps, how many rows of
each table and which nodes are complete. Readers use only that: arrays grown along ``map``
are cut to the committed maps, tables to their committed rows, and nodes not named are
skipped. A version without the record (written before it existed) is read whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COMMIT_KEY", "CommitRecord"]

#: Metadata key of the commit record in a version container.
COMMIT_KEY = "committed"


@dataclass(frozen=True)
class CommitRecord:
    """Committed maps, table rows and complete nodes of one version.

    Attributes
    ----------
    maps : int
        Maps along ``map`` that readers may use (the first ``maps``).
    rows : dict of str to int
        Rows of each grown table that readers may use (the first ``rows[name]``).
    names : tuple of str
        Arrays, coordinates and tables that are complete; others are skipped.
    grown : tuple of str
        Arrays grown map by map (cut to ``maps``); arrays written whole are not cut.

    Examples
    --------
    >>> record = CommitRecord(2, {"grains": 7}, ("c_perp", "grains", "x"), ("c_perp",))
    >>> CommitRecord.from_metadata({COMMIT_KEY: record.to_metadata()}) == record
    True
    >>> CommitRecord.from_metadata({}) is None
    True
    """

    maps: int
    rows: dict[str, int] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    grown: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, maps: int, rows: Mapping[str, int], names: Iterable[str], grown: Iterable[str] = ()
    ) -> CommitRecord:
        """A record with sorted names and plain-int counts."""
        counts = {k: int(v) for k, v in sorted(rows.items())}
        return cls(int(maps), counts, tuple(sorted(names)), tuple(sorted(grown)))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> CommitRecord | None:
        """The record stored in a version's metadata, or None for a version without one."""
        stored = metadata.get(COMMIT_KEY)
        if stored is None:
            return None
        rows, names = stored.get("rows") or {}, stored.get("names") or ()
        return cls.build(stored["maps"], rows, names, stored.get("grown") or ())

    def to_metadata(self) -> dict[str, Any]:
        """The JSON form stored under ``metadata["committed"]``."""
        return {
            "maps": self.maps,
            "rows": dict(self.rows),
            "names": list(self.names),
            "grown": list(self.grown),
        }
