"""Access per proposal: who may read, write, delete and register what on the opmap server.

Two things decide what a request may do:

* **The key's scopes** (its role): a reader key has ``read:metadata read:data``; a
  writer key adds ``write:metadata write:data create:node register``; only an admin key
  has ``delete:node delete:revision`` and the key-administration scopes. Tiled checks
  these itself.
* **The key's proposals** (Tiled's per-key ``access_tags``): a key restricted to
  proposals sees only nodes carrying one of them, or lying inside a node that carries
  one (raw runs and product versions are tagged once, at their top; their streams and
  arrays inherit). A key without proposals (the beamline writer, an admin) sees all.

The root's children (``raw``, ``processed``) are layout: every key may list them, while
their contents are filtered. A node nobody tagged (a run written without a proposal) is
therefore visible to unrestricted keys only.

Tags are created on first use: an unrestricted writer or an admin tagging a node with a
new proposal defines that tag in the catalog database. A restricted key may only apply
its own proposals, and only an admin may change the tags of an existing node.

**Sealed nodes.** A node whose metadata, or an ancestor's, has ``opmap_sealed: true``
(`SEALED_KEY`) is stored for good: no key but an admin's may write data or metadata to it,
create or register nodes under it. The beamline writer seals each raw run once it has
fully landed and been validated (`opmap.callbacks.tiled_writer.ValidatedTiledWriter`,
and ``opmap recover`` / ``opmap resume`` for the runs they complete), and each product
version once final (`opmap.callbacks.tiled_products.seal_version`), so the writer key
cannot overwrite what it stored; the admin's writes are in the access log.

**Append only.** Inside a node that is not sealed, a key without the admin scope may
only append: each data write and metadata update is checked against the stored node
(:mod:`opmap.service._append`; the request is noted by its ASGI middleware and checked in
:meth:`ProposalAccessPolicy.allowed_scopes` and before Tiled writes new metadata). In a
product version, the arrays may also be rewritten beyond what its commit record counts
(readers do not use it yet): the record comes with the sealed check (`NodeState`).

The sealed check (one SQL query over a node's ancestors) runs for every request of a key
with write scopes, reads included. Its answer is cached per node (`SealedCache`) and the
whole cache is dropped whenever a node's metadata changes: every ``PUT``/``PATCH`` of
metadata passes through :meth:`ProposalAccessPolicy.modify_node`, and answers found while
such a change is on its way to the database are not kept. A node sealed after a first
request is therefore refused on the next one. This holds for one server process per
catalog, which is how opmap serves (the data-dir lock).
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from tiled.access_control.access_tags import AccessTagsParser
from tiled.access_control.protocols import AccessPolicy, normalize_access_tags
from tiled.access_control.scopes import ScopeName
from tiled.catalog import orm
from tiled.queries import AccessTagsFilter
from tiled.server.protocols import InternalAuthenticator, UserSessionState

from opmap.callbacks.sealing import is_sealed

from ._append import (
    check_data_write,
    check_metadata_grows,
    committed_extent,
    current_write,
    stored_metadata,
)
from ._lookupcache import LookupCache, sqlite_file

__all__ = [
    "PROPOSAL_PATTERN",
    "VISIBILITY_MEMO_S",
    "KeysOnlyAuthenticator",
    "NodeState",
    "ProposalAccessPolicy",
    "ProposalTags",
    "SealedCache",
]

logger = logging.getLogger(__name__)

#: What a proposal (an access tag) may be called: 1-64 of ``A-Za-z0-9._-``.
PROPOSAL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ADMIN_SCOPE = ScopeName.admin_apikeys
_ROOT_NODE_ID = 0  # tiled.catalog.adapter.RootNode.id
#: What a sealed node refuses to every key but an admin's.
_WRITE_SCOPES = frozenset({"write:data", "write:metadata", "create:node", "register"})
#: Scopes of a data write (``write:data``) or metadata update (``write:metadata``).
_DATA_SCOPES = frozenset({"write:data", "write:metadata"})
#: How long a node's visibility is remembered within one request's task (s).
VISIBILITY_MEMO_S = 1.0

#: ``(started, {(node_id, key_tags): visible})`` of the current asyncio task: a request.
#: Tiled walks a path one segment at a time and asks the policy about every node on it;
#: a node inside a visible node is visible (tags are inherited), so one tag query per
#: request usually answers the whole walk instead of one per segment.
_VISIBILITY: contextvars.ContextVar[tuple[float, dict[tuple[int, frozenset[str]], bool | None]]]
_VISIBILITY = contextvars.ContextVar("opmap_visibility")


class KeysOnlyAuthenticator(InternalAuthenticator):
    """A login provider that logs nobody in: opmap's principals act through API keys only.

    Tiled keeps principals, identities and API keys only when an authentication provider
    is configured; this one gives the identities a provider name (``opmap``) without
    opening a password login.
    """

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        """Refuse every login (use an API key)."""
        logger.warning("Refused a password login for %r: opmap accepts API keys only", username)
        return None


class ProposalTags(AccessTagsParser):
    """Tiled's tag reader on the catalog database, plus the two queries opmap needs.

    A node's inherited tags are kept until the catalog database changes (a
    :class:`~opmap.service._lookupcache.LookupCache` on ``PRAGMA data_version``, for a
    SQLite catalog): a tag added or a node deleted is seen at the next request.
    """

    def __init__(self, engine: Any = None) -> None:
        super().__init__(engine)
        self._answers: LookupCache | None = None

    def _cache(self) -> LookupCache | None:
        if self._answers is None and self._engine is not None:
            path = sqlite_file(self._engine.url)
            if path is not None:
                self._answers = LookupCache(path)
        return self._answers

    async def define(self, names: Iterable[str]) -> None:
        """Create the tag rows of ``names`` that do not exist yet (idempotent)."""
        rows = [{"name": name, "is_public": False} for name in sorted(set(names))]
        if not rows:
            return
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(orm.AccessTag.__table__).values(rows)
        async with self._engine.begin() as connection:
            await connection.execute(statement.on_conflict_do_nothing(index_elements=["name"]))

    async def inherited(self, node_id: int) -> frozenset[str]:
        """The tags on node ``node_id`` and on its ancestors, except the root.

        Tiled tags the root ``public``; that tag says nothing about a proposal.
        """
        cache = self._cache()
        found, version = (None, None) if cache is None else cache.get(("inherited", node_id))
        if found is None:
            found = await self._inherited(node_id)
            if cache is not None:
                cache.store(("inherited", node_id), found, version)
        return found

    async def _inherited(self, node_id: int) -> frozenset[str]:
        closure, association = orm.NodesClosure, orm.NodeAccessTagAssociation
        statement = (
            select(orm.AccessTag.name)
            .join(association, association.tag_id == orm.AccessTag.id)
            .join(closure, closure.ancestor == association.node_id)
            .where(closure.descendant == node_id, closure.ancestor != _ROOT_NODE_ID)
        )
        async with self._engine.connect() as connection:
            return frozenset((await connection.execute(statement)).scalars())

    async def ancestry(self, node_id: int) -> list[tuple[int, str, Any, Any]]:
        """``(depth, key, metadata, specs)`` of node ``node_id`` (depth 0) and of each of
        its ancestors except the root, in one query."""
        closure = orm.NodesClosure
        statement = (
            select(closure.depth, orm.Node.key, orm.Node.metadata_, orm.Node.specs)
            .join(closure, closure.ancestor == orm.Node.id)
            .where(closure.descendant == node_id, closure.ancestor != _ROOT_NODE_ID)
        )
        async with self._engine.connect() as connection:
            return [tuple(row) for row in (await connection.execute(statement)).all()]

    async def sealed(self, node_id: int) -> bool:
        """True when node ``node_id`` or an ancestor has `SEALED_KEY` true in its metadata."""
        return NodeState.of(await self.ancestry(node_id)).sealed


@dataclass(frozen=True)
class NodeState:
    """What the policy needs to know of a node's stored ancestry, cached per node.

    Attributes
    ----------
    sealed : bool
        The node or an ancestor is sealed (`SEALED_KEY`).
    committed : int or None
        The committed extent along axis 0 of an array of a product version
        (`opmap.service._append.committed_extent`); None for other nodes.
    """

    sealed: bool
    committed: int | None = None

    @classmethod
    def of(cls, ancestry: list[tuple[int, str, Any, Any]]) -> NodeState:
        """The state of the node whose ``ancestry`` (`ProposalTags.ancestry`) is given."""
        sealed = any(is_sealed(metadata) for _, _, metadata, _ in ancestry)
        return cls(sealed, None if sealed else committed_extent(ancestry))


def _node_id(node: Any) -> int | None:
    return getattr(getattr(node, "node", None), "id", None)


def _parent_id(node: Any) -> int | None:
    return getattr(getattr(node, "node", None), "parent", None)


def _cache_key(node: Any) -> tuple[int, Any] | None:
    """A node's identity for the sealed cache: its id and creation time (SQLite may give
    a deleted node's id to a new one); None for what is not a catalog node."""
    orm_node = getattr(node, "node", None)
    node_id = getattr(orm_node, "id", None)
    if node_id is None:
        return None
    return node_id, getattr(orm_node, "time_created", None)


class SealedCache:
    """Sealed or not (a `NodeState`), per node, until any node's metadata changes.

    A node's answer depends on its metadata and its ancestors' (the commit record of a
    product version is its metadata too); only a metadata update changes it (nodes never
    move). `changing` is entered for each update before it is
    written and left once it is committed: meanwhile nothing is cached, and answers from
    queries that overlapped a change are dropped (`store` with the `generation` read
    before the query).

    Parameters
    ----------
    max_nodes : int
        Answers kept (>= 1); the cache is emptied when full.
    abandoned_after_s : float
        A change not committed within this time (s, > 0; the request failed between the
        policy's check and the write) no longer blocks caching.
    """

    def __init__(self, *, max_nodes: int = 100_000, abandoned_after_s: float = 60.0) -> None:
        if max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1; got {max_nodes}")
        if not abandoned_after_s > 0:
            raise ValueError(f"abandoned_after_s must be > 0 s; got {abandoned_after_s}")
        self.max_nodes = max_nodes
        self.abandoned_after_s = abandoned_after_s
        self.generation = 0
        self._answers: dict[tuple[int, Any], Any] = {}
        self._changes: dict[int, float] = {}  # change token -> monotonic start
        self._next_token = 0

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: tuple[int, Any]) -> Any:
        """The cached answer for ``key``, or None (ask the database)."""
        return self._answers.get(key) if self._quiet() else None

    def store(self, key: tuple[int, Any], sealed: Any, generation: int) -> None:
        """Keep an answer (not None) found by a query started at ``generation``, if still
        current."""
        if generation != self.generation or not self._quiet():
            return
        if len(self._answers) >= self.max_nodes:
            self._answers.clear()
        self._answers[key] = sealed

    def begin_change(self) -> int:
        """A metadata update is about to be written: forget everything; returns its token."""
        token, self._next_token = self._next_token, self._next_token + 1
        self._changes[token] = time.monotonic()
        self._invalidate()
        return token

    def end_change(self, token: int) -> None:
        """The update of ``token`` is committed (or failed): forget what was found meanwhile."""
        self._changes.pop(token, None)
        self._invalidate()

    def _invalidate(self) -> None:
        self.generation += 1
        self._answers.clear()

    def _quiet(self) -> bool:
        """No metadata update on its way (abandoned ones are forgotten)."""
        if self._changes:
            oldest_s = time.monotonic() - self.abandoned_after_s
            for token in [t for t, started in self._changes.items() if started < oldest_s]:
                logger.warning("a metadata update never finished; the sealed cache resumes")
                del self._changes[token]
        return not self._changes


def _visibility_memo() -> dict[tuple[int, frozenset[str]], bool | None]:
    """This task's memo; a new one after :data:`VISIBILITY_MEMO_S` (bounds staleness)."""
    now = time.monotonic()
    started, memo = _VISIBILITY.get((-VISIBILITY_MEMO_S, {}))
    if now - started >= VISIBILITY_MEMO_S:
        memo = {}
        _VISIBILITY.set((now, memo))
    return memo


class ProposalAccessPolicy(AccessPolicy):
    """Tiled access policy: a key's scopes say what it may do, its proposals where.

    See the module docstring for the rules. Configured as
    ``access_control: {access_policy: "opmap.service:ProposalAccessPolicy"}``; Tiled
    connects :attr:`access_tags_parser` to the catalog database at start-up.
    """

    def __init__(self) -> None:
        self.access_tags_parser = ProposalTags()
        #: Sealed or not per node, dropped on every metadata change (`SealedCache`).
        self.sealed_cache = SealedCache()

    async def _visible(self, node: Any, key_tags: frozenset[str]) -> bool | None:
        """True/False: the node is (not) inside one of ``key_tags``; None: it is untagged.

        Asked again within the same request, or for a child of a node found visible in
        it, the answer comes from the task's memo (tags are inherited, never narrowed).
        """
        node_id = _node_id(node)
        if node_id is None or node_id == _ROOT_NODE_ID:
            return None
        memo = _visibility_memo()
        if (node_id, key_tags) in memo:
            return memo[node_id, key_tags]
        if memo.get((_parent_id(node), key_tags)) is True:
            visible: bool | None = True
        else:
            tags = await self.access_tags_parser.inherited(node_id)
            visible = bool(tags & key_tags) if tags else None
        memo[node_id, key_tags] = visible
        return visible

    async def init_node(
        self,
        principal: Any,
        authn_access_tags: frozenset[str] | None,
        authn_scopes: set[str],
        access_tags: Iterable[str] | None = None,
    ) -> tuple[bool, frozenset[str]]:
        """Accept the tags of a new node: proposals of the key (any for unrestricted keys)."""
        tags = normalize_access_tags(access_tags or ())
        for tag in tags:
            if not PROPOSAL_PATTERN.fullmatch(tag):
                raise ValueError(f"{tag!r} is not a proposal name ({PROPOSAL_PATTERN.pattern})")
            if authn_access_tags is not None and tag not in authn_access_tags:
                raise ValueError(f"this API key is restricted to {sorted(authn_access_tags)}")
        await self.access_tags_parser.define(tags)
        return False, tags

    async def modify_node(
        self,
        node: Any,
        principal: Any,
        authn_access_tags: frozenset[str] | None,
        authn_scopes: set[str],
        access_tags: Iterable[str] | None,
    ) -> tuple[bool, frozenset[str]]:
        """Keep a node's tags; only an admin key may change them.

        Tiled calls this for every metadata update (``PUT``/``PATCH``), before writing it:
        the sealed cache is dropped now and again once the update is committed.
        """
        token = self.sealed_cache.begin_change()
        try:
            result = await self._check_tags(node, authn_scopes, access_tags)
        except BaseException:
            self.sealed_cache.end_change(token)
            raise
        append_only = _ADMIN_SCOPE not in authn_scopes
        _end_change_after_write(node, self.sealed_cache, token, append_only=append_only)
        return result

    async def _check_tags(
        self, node: Any, authn_scopes: set[str], access_tags: Iterable[str] | None
    ) -> tuple[bool, frozenset[str]]:
        current = normalize_access_tags(getattr(node, "access_tags", ()))
        if access_tags is None or normalize_access_tags(access_tags) == current:
            return False, current
        if _ADMIN_SCOPE not in authn_scopes:
            raise ValueError("only an admin key may change the proposals of a stored node")
        tags = await self.init_node(None, None, authn_scopes, access_tags)
        logger.warning("Admin retagged %s from %s to %s", node, sorted(current), sorted(tags[1]))
        return True, tags[1]

    async def allowed_scopes(
        self,
        node: Any,
        principal: Any,
        authn_access_tags: frozenset[str] | None,
        authn_scopes: set[str],
    ) -> set[str]:
        """The key's scopes on ``node``: none inside another proposal's node, and no
        writing inside a sealed node unless the key is an admin's."""
        if authn_access_tags is not None and await self._visible(node, authn_access_tags) is False:
            return set()
        scopes = set(authn_scopes)
        if _ADMIN_SCOPE in scopes or not scopes & _WRITE_SCOPES:
            return scopes
        state = await self._state(node)
        if state.sealed:
            return scopes - _WRITE_SCOPES
        request = current_write()
        if request is not None and scopes & _DATA_SCOPES and _is_target(node, request.key):
            # raises 403 unless it appends (or redoes what a product version left uncommitted)
            await check_data_write(node, request, committed=state.committed)
        return scopes

    async def _state(self, node: Any) -> NodeState:
        """Whether ``node`` or an ancestor is sealed, and its committed extent if it is a
        product array: one query, cached per node (`SealedCache`)."""
        key = _cache_key(node)
        if key is None or key[0] == _ROOT_NODE_ID:
            return _UNSEALED
        cache = self.sealed_cache
        state = cache.get(key)
        if state is None:
            generation = cache.generation
            state = NodeState.of(await self.access_tags_parser.ancestry(key[0]))
            cache.store(key, state, generation)
        return state

    async def filters(
        self,
        node: Any,
        principal: Any,
        authn_access_tags: frozenset[str] | None,
        authn_scopes: set[str],
        scopes: set[str],
    ) -> list[Any]:
        """Which children of ``node`` the key sees: all, or those of its proposals."""
        if authn_access_tags is None or _node_id(node) == _ROOT_NODE_ID:
            return []
        if await self._visible(node, authn_access_tags):
            return []
        return [AccessTagsFilter(sorted(authn_access_tags))]


_UNSEALED = NodeState(sealed=False)


def _is_target(node: Any, key: str) -> bool:
    """Whether ``node`` is the node a request names by its last segment ``key`` (Tiled
    asks the policy about the root and about the request's node only)."""
    orm_node = getattr(node, "node", None)
    return getattr(orm_node, "id", _ROOT_NODE_ID) != _ROOT_NODE_ID and orm_node.key == key


def _end_change_after_write(
    node: Any, cache: SealedCache, token: int, *, append_only: bool = False
) -> None:
    """End the cache's change ``token`` once ``node.replace_metadata`` (the write Tiled
    makes right after `ProposalAccessPolicy.modify_node`) has run, for this node object
    (one request's) only. With ``append_only``, the new metadata must only add to the
    stored one (`check_metadata_grows`), or nothing is written (403)."""
    original = node.replace_metadata

    async def replace_metadata(*args: Any, **kwargs: Any) -> Any:
        try:
            if append_only:
                request = current_write()
                metadata, specs = stored_metadata(node)
                path = node.node.key if request is None else request.path
                new = kwargs.get("metadata", {}), kwargs.get("specs", ())
                check_metadata_grows(path, metadata, new[0], specs, new[1])
            return await original(*args, **kwargs)
        finally:
            cache.end_change(token)
            del node.replace_metadata  # back to the class's method

    node.replace_metadata = replace_metadata
