"""Build EPICS devices in mock mode when no Channel Access client (aioca) is installed.

Mock mode replaces every backend at connect, but ophyd-async builds the CA backend at
construction, which needs aioca. This stand-in only records the PV name.
"""

from __future__ import annotations

import importlib.util

import pytest
from ophyd_async.core import SoftSignalBackend


class OfflineCaBackend(SoftSignalBackend):
    def __init__(self, datatype, read_pv, write_pv, options=None):
        super().__init__(datatype)
        self.read_pv, self.write_pv = read_pv, write_pv

    def source(self, name: str, read: bool) -> str:
        return f"ca://{self.read_pv if read else self.write_pv}"


def allow_offline_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("aioca") is None:
        from ophyd_async.epics.core import _signal

        monkeypatch.setattr(_signal, "CaSignalBackend", OfflineCaBackend)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of an exception (the RunEngine wraps device errors)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc
