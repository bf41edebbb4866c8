"""opmap beamline session for ``ipython --profile-dir=profile``.

The whole recipe: find the profile file (``$OPMAP_BEAMLINE_CONFIG``, else ``beamline.toml``
beside this folder), build the session, put its names into the user namespace and say what
they are. All wiring is in ``profile/opmap_profile.py``; this file defines no globals.
"""


def _start_opmap_session() -> None:
    import importlib.util
    import sys
    from pathlib import Path

    wiring = Path(__file__).resolve().parent.parent / "opmap_profile.py"
    spec = importlib.util.spec_from_file_location("opmap_profile", wiring)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    session = module.session_from_environment()
    names = session.namespace()
    get_ipython().user_ns.update(names)  # noqa: F821  (IPython defines it for startup files)
    print(module.banner(session, names))  # noqa: T201  (the one message a user reads)


_start_opmap_session()
del _start_opmap_session
