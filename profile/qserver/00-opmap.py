"""opmap beamline session for the bluesky queue server's worker (no IPython).

``start-re-manager --startup-dir profile/qserver`` (or ``opmap queue serve``) runs this file
each time the worker's environment opens: it builds the same session as the IPython profile
(``profile/opmap_profile.py``, from ``$OPMAP_BEAMLINE_CONFIG`` or ``profile/beamline.toml``)
and leaves in the worker's namespace only ``RE``, the devices and opmap's queue-facing plans
(`opmap.queue.queue_namespace`). ``OPMAP_LIVE_ANALYSIS=off`` leaves out the live analysis.
"""


def _opmap_queue_namespace() -> dict:
    import importlib.util
    import os
    import sys
    from pathlib import Path

    from opmap.queue import queue_namespace

    wiring = Path(__file__).resolve().parent.parent / "opmap_profile.py"
    spec = importlib.util.spec_from_file_location("opmap_profile", wiring)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    live = os.environ.get("OPMAP_LIVE_ANALYSIS", "on").lower() not in ("off", "0", "false")
    # RE.md persists in the same folder as the IPython profile's; no terminal: no progress bars
    session = module.session_from_environment(live_analysis=live, progress_bars=False)
    return queue_namespace(session)


globals().update(_opmap_queue_namespace())
del _opmap_queue_namespace
