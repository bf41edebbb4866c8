"""The opmap Tiled service: config generation, API key, and ways to run the server.

``opmap serve`` starts a Tiled server from a generated config file: a SQLite catalog
(PostgreSQL for several writers), DuckDB event tables, file storage, the detector
directory readable in place, bluesky-tiled-plugins' document exporter and validation
router, and API keys scoped by role and proposal (:mod:`opmap.service._access`,
:mod:`opmap.service._keys`; no anonymous access). The server binds to 127.0.0.1 unless
told otherwise.

Examples
--------
Generate the config without starting anything::

    from opmap.settings import OpmapSettings
    from opmap.service import write_server_config

    path = write_server_config(OpmapSettings(data_dir="beamtime-2026"))

Serve in a subprocess for the length of a rehearsal::

    with start_server_subprocess(OpmapSettings(data_dir="rehearsal")) as server:
        client = server.client()
"""

from ._access import KeysOnlyAuthenticator, ProposalAccessPolicy, ProposalTags, SealedCache
from ._append import current_write
from ._catalog_init import init_catalog_database
from ._config import (
    ACCESS_POLICY,
    AUTHENTICATOR,
    CATALOG_TREE,
    JSON_SEQ_EXPORTER,
    VALIDATOR_ROUTER,
    check_directories,
    check_port_free,
    ensure_api_key,
    server_config,
    write_server_config,
)
from ._dependants import memoise_dependants
from ._duckdb import create_duckdb_stores
from ._keycache import (
    SERVER_TIMING_KEY,
    KeyGrant,
    KeyGrantCache,
    grant_from_orm,
    install_key_cache,
)
from ._keyquery import API_KEY_QUERY_REFUSAL, ApiKeyQueryGuard, malformed_api_key_query
from ._keys import (
    ADMIN_PRINCIPAL,
    ROLE_SCOPES,
    ROLES,
    WRITER_PRINCIPAL,
    KeyInfo,
    authn_database_path,
    create_key,
    ensure_authn_database,
    ensure_service_keys,
    list_keys,
    revoke_key,
)
from ._lock import LOCK_FILE_NAME, DataDirInUseError, ServerLock
from ._lookupcache import LookupCache, install_lookup_cache
from ._relocate import check_not_moved, recorded_data_dir, relocate_data_dir
from ._request import RequestScope, ServedRequest, current_request
from ._run import (
    SERVER_MALLOC_ARENA_MAX,
    SERVER_MALLOC_MMAP_THRESHOLD_BYTES,
    ServerHandle,
    app_from_config_file,
    build_in_process_app,
    free_port,
    run_config_file,
    serve,
    server_environment,
    start_server_subprocess,
    trim_heap_every,
    wait_until_answering,
)

__all__ = [
    "ACCESS_POLICY",
    "ADMIN_PRINCIPAL",
    "API_KEY_QUERY_REFUSAL",
    "AUTHENTICATOR",
    "CATALOG_TREE",
    "JSON_SEQ_EXPORTER",
    "LOCK_FILE_NAME",
    "ROLES",
    "ROLE_SCOPES",
    "SERVER_MALLOC_ARENA_MAX",
    "SERVER_MALLOC_MMAP_THRESHOLD_BYTES",
    "SERVER_TIMING_KEY",
    "VALIDATOR_ROUTER",
    "WRITER_PRINCIPAL",
    "ApiKeyQueryGuard",
    "DataDirInUseError",
    "KeyGrant",
    "KeyGrantCache",
    "KeyInfo",
    "KeysOnlyAuthenticator",
    "LookupCache",
    "ProposalAccessPolicy",
    "ProposalTags",
    "RequestScope",
    "SealedCache",
    "ServedRequest",
    "ServerHandle",
    "ServerLock",
    "app_from_config_file",
    "authn_database_path",
    "build_in_process_app",
    "check_directories",
    "check_not_moved",
    "check_port_free",
    "create_duckdb_stores",
    "create_key",
    "current_request",
    "current_write",
    "ensure_api_key",
    "ensure_authn_database",
    "ensure_service_keys",
    "free_port",
    "grant_from_orm",
    "init_catalog_database",
    "install_key_cache",
    "install_lookup_cache",
    "list_keys",
    "malformed_api_key_query",
    "memoise_dependants",
    "recorded_data_dir",
    "relocate_data_dir",
    "revoke_key",
    "run_config_file",
    "serve",
    "server_config",
    "server_environment",
    "start_server_subprocess",
    "trim_heap_every",
    "wait_until_answering",
    "write_server_config",
]
