"""Settings and generated files of opmap's queue server (bluesky-queueserver + httpserver).

`QueueSettings` holds every address and path; `write_queue_files` writes, into its
``run_dir``:

- ``user_group_permissions.yaml``: the queue may run only opmap's queue-facing plans
  (`QUEUE_PLAN_NAMES`) on the session's devices;
- ``httpserver.yml``: the HTTP server's configuration. Authentication by password for two
  accounts, ``operator`` (role ``user``: may submit, start, pause, stop) and ``observer``
  (role ``observer``: reads status, queue and history only); anonymous access off. Each
  account mints API keys (``POST /api/auth/apikey``); a key never has more scopes than its
  account, and may be given fewer (e.g. read-only). Passwords are not in this file: the
  server reads them from environment variables that `queue_environment` fills from the
  owner-only files ``operator-password`` and ``observer-password``;
- the password files themselves, generated once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ._plans import QUEUE_PLAN_NAMES

__all__ = [
    "ACCOUNTS",
    "QueueSettings",
    "ensure_password",
    "httpserver_config",
    "queue_environment",
    "user_group_permissions",
    "write_queue_files",
]

#: Accounts of the HTTP server and their bluesky-httpserver roles.
ACCOUNTS = {"operator": "user", "observer": "observer"}

#: The HTTP server's name for opmap's password provider (``/api/auth/provider/<name>/token``).
PROVIDER = "opmap"


class QueueSettings(BaseModel):
    """Where the queue server's parts listen and what they read.

    Attributes
    ----------
    profile_config : Path
        The beamline profile TOML the worker builds its session from (``profile/beamline.toml``).
    startup_dir : Path or None
        The queue server's startup folder; default ``qserver/`` beside ``profile_config``.
    run_dir : Path
        Generated files, passwords, logs and Redis' dump.
    host : str
        Interface the HTTP server binds to (127.0.0.1: this machine only).
    http_port : int
        Port of the HTTP server.
    zmq_control_port, zmq_info_port : int
        RE Manager's 0MQ control and console ports (on 127.0.0.1 only).
    redis_port : int
        Port of the Redis server holding the queue and history.
    redis_prefix : str
        Prefix of the queue's Redis keys.
    live_analysis : bool
        Subscribe the profile's live analysis in the worker.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile_config: Path = Path("profile/beamline.toml")
    startup_dir: Path | None = None
    run_dir: Path = Path("opmap-queue")
    host: str = Field(default="127.0.0.1", min_length=1)
    http_port: int = Field(default=60610, ge=1, le=65535)
    zmq_control_port: int = Field(default=60615, ge=1, le=65535)
    zmq_info_port: int = Field(default=60625, ge=1, le=65535)
    redis_port: int = Field(default=60679, ge=1, le=65535)
    redis_prefix: str = Field(default="opmap", pattern=r"^[A-Za-z0-9_]+$")
    live_analysis: bool = True

    @property
    def url(self) -> str:
        """Base URL of the HTTP server as clients on this machine reach it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.http_port}"

    @property
    def startup_folder(self) -> Path:
        """The startup folder the worker loads (absolute)."""
        folder = self.startup_dir or self.profile_config.parent / "qserver"
        return folder.resolve()

    @property
    def zmq_control_address(self) -> str:
        """0MQ control address clients connect to."""
        return f"tcp://127.0.0.1:{self.zmq_control_port}"

    @property
    def zmq_info_address(self) -> str:
        """0MQ console-output address clients connect to."""
        return f"tcp://127.0.0.1:{self.zmq_info_port}"

    def password_file(self, account: str) -> Path:
        """The owner-only file holding ``account``'s password."""
        if account not in ACCOUNTS:
            raise ValueError(f"account={account!r} must be one of {sorted(ACCOUNTS)}")
        return self.run_dir.resolve() / f"{account}-password"


def user_group_permissions() -> dict[str, Any]:
    """The queue's permissions: opmap's queue-facing plans and the session's devices only.

    ``root`` filters for every group (nothing private, names starting with ``_``);
    ``primary``, the group of every HTTP user, may run the queue-facing plans on any device
    (and subdevices three deep) and no functions.
    """
    root = _rules([None], [None], [":^_"])
    primary = _rules(list(QUEUE_PLAN_NAMES), [":?.*:depth=3"], [":.*"])
    return {"user_groups": {"root": root, "primary": primary}}


def _rules(
    plans: list[str | None], devices: list[str | None], forbidden_functions: list[str | None]
) -> dict[str, list[str | None]]:
    return {
        "allowed_plans": plans,
        "forbidden_plans": [":^_"],
        "allowed_devices": devices,
        "forbidden_devices": [":^_:?.*"],
        "allowed_functions": [None],
        "forbidden_functions": forbidden_functions,
    }


def httpserver_config(settings: QueueSettings) -> dict[str, Any]:
    """bluesky-httpserver's configuration (see the module notes)."""
    run_dir = settings.run_dir.resolve()
    passwords = {name: f"${{{_password_variable(name)}}}" for name in ACCOUNTS}
    return {
        "qserver_zmq_configuration": {
            "control_address": settings.zmq_control_address,
            "info_address": settings.zmq_info_address,
        },
        "authentication": {
            "providers": [
                {
                    "provider": PROVIDER,
                    "authenticator": "bluesky_httpserver.authenticators:DictionaryAuthenticator",
                    "args": {"users_to_passwords": passwords},
                }
            ],
            "allow_anonymous_access": False,
        },
        "database": {"uri": f"sqlite:///{run_dir / 'httpserver.sqlite'}"},
        "api_access": {
            "policy": "bluesky_httpserver.authorization:DictionaryAPIAccessControl",
            "args": {"users": {name: {"roles": [role]} for name, role in ACCOUNTS.items()}},
        },
        "uvicorn": {"host": settings.host, "port": settings.http_port},
    }


def ensure_password(settings: QueueSettings, account: str) -> str:
    """``account``'s password: read from its file, or generated there (owner-only) once."""
    path = settings.password_file(account)
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(24)
    # O_EXCL + 0o600: never readable by others, never an existing file overwritten.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(password + "\n")
    return password


def queue_environment(settings: QueueSettings) -> dict[str, str]:
    """Environment variables the HTTP server and the worker need (passwords, profile)."""
    env = {_password_variable(name): ensure_password(settings, name) for name in ACCOUNTS}
    env["OPMAP_BEAMLINE_CONFIG"] = str(settings.profile_config.resolve())
    env["OPMAP_LIVE_ANALYSIS"] = "on" if settings.live_analysis else "off"
    return env


def write_queue_files(settings: QueueSettings) -> dict[str, Path]:
    """Write the permissions and HTTP server files into ``run_dir``; return their paths."""
    run_dir = settings.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "permissions": run_dir / "user_group_permissions.yaml",
        "httpserver": run_dir / "httpserver.yml",
        "existing": run_dir / "existing_plans_and_devices.yaml",
    }
    _write_yaml(paths["permissions"], user_group_permissions())
    _write_yaml(paths["httpserver"], httpserver_config(settings))
    for account in ACCOUNTS:
        ensure_password(settings, account)
    return paths


def _password_variable(account: str) -> str:
    return f"OPMAP_QUEUE_{account.upper()}_PASSWORD"


def _write_yaml(path: Path, content: dict[str, Any]) -> None:
    header = "# Generated by opmap (opmap.queue); edit QueueSettings, not this file.\n"
    path.write_text(header + yaml.safe_dump(content, sort_keys=False))
