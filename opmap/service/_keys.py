"""API keys of an opmap server: one principal per user, keys scoped by role and proposal.

Keys live in Tiled's authentication database, ``DATA_DIR/authn.db`` (SQLite, owner-only),
which Tiled creates and reads; only the SHA-256 of a key's secret is stored, so a new key
is shown once. Each user is a Tiled principal with the identity ``(opmap, NAME)``; each
key carries the scopes of its role (:data:`ROLE_SCOPES`) and, optionally, the proposals
it is restricted to (Tiled's per-key ``access_tags``, enforced by
:class:`~opmap.service._access.ProposalAccessPolicy`).

Two keys are made by the service itself: the beamline writer key in ``DATA_DIR/api-key``
(principal ``beamline``, role ``writer``, every proposal) and the admin key in
``DATA_DIR/admin-key`` (principal ``admin``, role ``admin``).

The functions here write the database directly, so they work whether or not the server
runs (SQLite serialises the writes; the server reads keys on every request).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, selectinload
from tiled.authn_database import orm

from opmap.settings import OpmapSettings

from ._access import PROPOSAL_PATTERN

__all__ = [
    "ADMIN_PRINCIPAL",
    "PROVIDER",
    "ROLES",
    "ROLE_SCOPES",
    "WRITER_PRINCIPAL",
    "KeyInfo",
    "authn_database_path",
    "create_key",
    "ensure_authn_database",
    "ensure_service_keys",
    "list_keys",
    "revoke_key",
]

#: Provider name of opmap's identities (``tiled_admins``, the access log).
PROVIDER = "opmap"
#: The principal of ``DATA_DIR/api-key`` and of ``DATA_DIR/admin-key``.
WRITER_PRINCIPAL, ADMIN_PRINCIPAL = "beamline", "admin"
_READ = ("read:metadata", "read:data")
_WRITE = (*_READ, "write:metadata", "write:data", "create:node", "register")
_ADMIN = (*_WRITE, "delete:node", "delete:revision", "admin:apikeys")
_ADMIN += ("read:principals", "write:principals", "metrics", "read:webhooks", "write:webhooks")
#: Scopes of each role; only ``admin`` may delete (nodes and metadata revisions).
ROLE_SCOPES: dict[str, tuple[str, ...]] = {"reader": _READ, "writer": _WRITE, "admin": _ADMIN}
ROLES = tuple(ROLE_SCOPES)
#: Tiled role (principal ceiling) of each opmap role; ``admin`` is Tiled's own.
_TILED_ROLE = {"reader": "opmap-reader", "writer": "opmap-writer", "admin": "admin"}
_OWNER_ONLY = 0o600


@dataclass(frozen=True)
class KeyInfo:
    """One API key as listed (never its secret).

    Attributes
    ----------
    name : str
        The user (principal identity) the key belongs to.
    role : str
        ``reader``, ``writer`` or ``admin``, from the key's scopes.
    proposals : tuple of str
        Proposals the key is restricted to; empty: all.
    first_eight : str
        First eight characters of the key, to recognise and revoke it.
    expires : datetime or None
        Expiry (UTC); None: never.
    last_used : datetime or None
        Latest request made with the key.
    note : str or None
        Free text given at creation.
    """

    name: str
    role: str
    proposals: tuple[str, ...]
    first_eight: str
    expires: datetime | None
    last_used: datetime | None
    note: str | None


def authn_database_path(settings: OpmapSettings) -> Path:
    """``DATA_DIR/authn.db``: Tiled's authentication database of this installation."""
    return settings.data_dir / "authn.db"


def ensure_authn_database(settings: OpmapSettings) -> Path:
    """Create the authentication database (Tiled's schema) and opmap's roles if missing."""
    path = authn_database_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tiled", "admin", "initialize-database"]
        subprocess.run([*command, f"sqlite:///{path}"], capture_output=True, check=True)
    path.chmod(_OWNER_ONLY)
    with _session(settings) as db:
        existing = set(db.scalars(select(orm.Role.name)))
        for role, tiled_role in _TILED_ROLE.items():
            if tiled_role not in existing:
                scopes = list(ROLE_SCOPES[role])
                db.add(orm.Role(name=tiled_role, description=f"opmap {role}", scopes=scopes))
        db.commit()
    return path


@contextmanager
def _session(settings: OpmapSettings) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{authn_database_path(settings)}")
    try:
        with Session(engine) as db:
            yield db
    finally:
        engine.dispose()


def _check_name(kind: str, value: str) -> str:
    if not PROPOSAL_PATTERN.fullmatch(value):
        raise ValueError(f"{kind} {value!r} must be 1-64 of A-Za-z0-9._- (letter or digit first)")
    return value


def _principal(db: Session, name: str, role: str) -> orm.Principal:
    """The principal of user ``name`` (created if new), with the Tiled role of ``role``."""
    identity = db.get(orm.Identity, {"id": name, "provider": PROVIDER})
    if identity is None:
        principal = orm.Principal(type="user")
        db.add(principal)
        db.flush()
        db.add(orm.Identity(id=name, provider=PROVIDER, principal_id=principal.id))
    else:
        principal = identity.principal
    tiled_role = db.scalars(select(orm.Role).where(orm.Role.name == _TILED_ROLE[role])).one()
    if tiled_role not in principal.roles:
        principal.roles.append(tiled_role)
    return principal


def create_key(
    settings: OpmapSettings,
    name: str,
    role: str,
    *,
    proposals: Sequence[str] = (),
    expires_in: timedelta | None = None,
    note: str | None = None,
    secret: str | None = None,
) -> str:
    """Create an API key for user ``name`` and return it (the only time it is shown).

    Parameters
    ----------
    settings : OpmapSettings
        The installation (its ``data_dir`` holds ``authn.db``).
    name : str
        The user, 1-64 of ``A-Za-z0-9._-``; created on first use.
    role : {"reader", "writer", "admin"}
        What the key may do (:data:`ROLE_SCOPES`).
    proposals : sequence of str
        Restrict the key to these proposals; required for a reader.
    expires_in : timedelta, optional
        Lifetime; default: until revoked.
    note : str, optional
        Free text shown by :func:`list_keys`.
    secret : str, optional
        Register this key (64 hex digits) instead of generating one.

    Raises
    ------
    ValueError
        For an unknown role, a bad name or proposal, a reader without proposals, a
        non-positive lifetime or a secret that is not hex.
    """
    if role not in ROLE_SCOPES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    _check_name("name", name)
    tags = sorted({_check_name("proposal", p) for p in proposals})
    if role == "reader" and not tags:
        raise ValueError("a reader key needs at least one --proposal")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValueError(f"expires_in must be positive; got {expires_in}")
    secret = secret if secret is not None else secrets.token_hex(32)
    try:
        raw = bytes.fromhex(secret)
    except ValueError:
        raise ValueError("an API key must be hexadecimal (e.g. secrets.token_hex(32))") from None
    ensure_authn_database(settings)
    with _session(settings) as db:
        key = orm.APIKey(
            first_eight=secret[:8],
            hashed_secret=hashlib.sha256(raw).digest(),
            expiration_time=None if expires_in is None else datetime.now(UTC) + expires_in,
            note=note,
            principal_id=_principal(db, name, role).id,
            scopes=list(ROLE_SCOPES[role]),
            access_tags=tags or None,
        )
        db.add(key)
        db.commit()
    return secret


def _role_of(scopes: Sequence[str]) -> str:
    if "admin:apikeys" in scopes:
        return "admin"
    return "writer" if "write:data" in scopes else "reader"


def _info(key: orm.APIKey) -> KeyInfo:
    names = [i.id for i in key.principal.identities if i.provider == PROVIDER]
    return KeyInfo(
        name=names[0] if names else str(key.principal.uuid),
        role=_role_of(key.scopes),
        proposals=tuple(key.access_tags or ()),
        first_eight=key.first_eight,
        expires=key.expiration_time,
        last_used=key.latest_activity,
        note=key.note,
    )


def list_keys(settings: OpmapSettings) -> list[KeyInfo]:
    """Every API key of the installation, by user then creation time."""
    ensure_authn_database(settings)
    with _session(settings) as db:
        keys = (
            db.scalars(
                select(orm.APIKey).options(
                    selectinload(orm.APIKey.principal).selectinload(orm.Principal.identities)
                )
            )
            .unique()
            .all()
        )
        infos = [(_info(key), key.time_created) for key in keys]
    return [info for info, _ in sorted(infos, key=lambda pair: (pair[0].name, str(pair[1])))]


def revoke_key(settings: OpmapSettings, first_eight: str) -> KeyInfo:
    """Delete the key whose first eight characters are ``first_eight``; return what it was.

    Raises
    ------
    LookupError
        When no key, or more than one, starts so.
    """
    ensure_authn_database(settings)
    with _session(settings) as db:
        keys = (
            db.scalars(select(orm.APIKey).where(orm.APIKey.first_eight == first_eight))
            .unique()
            .all()
        )
        if len(keys) != 1:
            raise LookupError(f"{len(keys)} keys start with {first_eight!r}; expected one")
        info = _info(keys[0])
        db.delete(keys[0])
        db.commit()
    return info


def _registered(settings: OpmapSettings, secret: str) -> bool:
    with _session(settings) as db:
        digest = hashlib.sha256(bytes.fromhex(secret)).digest()
        query = select(orm.APIKey).where(orm.APIKey.hashed_secret == digest)
        return db.scalars(query).first() is not None


def _admin_key(settings: OpmapSettings) -> str:
    path = settings.data_dir / "admin-key"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _OWNER_ONLY)
    with os.fdopen(fd, "w") as stream:
        stream.write(secret + "\n")
    return secret


def ensure_service_keys(settings: OpmapSettings, writer_key: str) -> str:
    """Register the beamline writer key and the admin key (made if missing); return the latter.

    Raises
    ------
    ValueError
        When ``writer_key`` is not hexadecimal (Tiled's key database stores hex keys).
    """
    ensure_authn_database(settings)
    admin_key = _admin_key(settings)
    for name, role, secret in (
        (WRITER_PRINCIPAL, "writer", writer_key),
        (ADMIN_PRINCIPAL, "admin", admin_key),
    ):
        if not _registered(settings, secret):
            create_key(settings, name, role, secret=secret, note=f"opmap {role} (service)")
    return admin_key
