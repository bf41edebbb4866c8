"""Remote operation: opmap's plans under bluesky-queueserver, with bluesky-httpserver in front.

Three parts, each in its own module:

- the queue-facing plans (``operando_experiment_plan``, ``fly_map_plan``): plain JSON
  arguments validated by pydantic into `MapGeometry` and a `StepTable` before anything
  moves, bound to the session's devices (`queue_plans`, `queue_namespace`; the worker's
  startup file is ``profile/qserver/00-opmap.py``);
- the generated files: the queue's user-group permissions and the HTTP server's config with
  an ``operator`` and a read-only ``observer`` account (`QueueSettings`, `write_queue_files`);
- the processes: Redis, RE Manager and the HTTP server (`start_queue_subprocesses`), and API
  keys (`create_api_key`).

``opmap queue serve`` runs them; ``docs/remote-operation.md`` says how to use them from afar.

Examples
--------
::

    settings = QueueSettings(profile_config="profile/beamline.toml", run_dir="opmap-queue")
    with start_queue_subprocesses(settings) as queue:
        key = create_api_key(queue.url, "operator", ensure_password(settings, "operator"))
"""

from ._args import (
    ExperimentArguments,
    MapArguments,
    PlanArgumentError,
    ProtocolArguments,
    StepArguments,
    load_protocol,
    validate_experiment_arguments,
    validate_map_arguments,
)
from ._config import (
    ACCOUNTS,
    QueueSettings,
    ensure_password,
    httpserver_config,
    queue_environment,
    user_group_permissions,
    write_queue_files,
)
from ._plans import QUEUE_PLAN_NAMES, queue_namespace, queue_plans
from ._run import QueueHandle, create_api_key, start_queue_subprocesses

__all__ = [
    "ACCOUNTS",
    "QUEUE_PLAN_NAMES",
    "ExperimentArguments",
    "MapArguments",
    "PlanArgumentError",
    "ProtocolArguments",
    "QueueHandle",
    "QueueSettings",
    "StepArguments",
    "create_api_key",
    "ensure_password",
    "httpserver_config",
    "load_protocol",
    "queue_environment",
    "queue_namespace",
    "queue_plans",
    "start_queue_subprocesses",
    "user_group_permissions",
    "validate_experiment_arguments",
    "validate_map_arguments",
    "write_queue_files",
]
