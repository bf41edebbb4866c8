"""A device whose IOC stopped answering: one error type that names the device and the PV.

ophyd-async raises ``TimeoutError(source)`` (``source`` is ``ca://PV``) when a PV does not
answer within the signal timeout, ``NotConnectedError`` when a signal never connected, and
aioca's ``CANothing`` (``PV: reason``) when the IOC disconnects during a put. `answered`
turns each into a `DeviceUnreachableError` whose message says which device, doing what,
which PV, and which IOC to look at: what a beamline scientist needs when a map fails at
3 a.m., instead of a bare ``TimeoutError: ca://OPMAP:EC:TIME``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aioca import CANothing
from ophyd_async.core import NotConnectedError

__all__ = ["DeviceUnreachableError", "answered"]

T = TypeVar("T")


class DeviceUnreachableError(ConnectionError):
    """A device's IOC stopped answering; the message names the device, the operation and
    the PV."""


async def answered(
    device: str,
    what: str,
    awaitable: Awaitable[T],
    *,
    ioc: str,
    error: type[DeviceUnreachableError] = DeviceUnreachableError,
) -> T:
    """Await ``awaitable``; a PV timeout or a Channel Access failure becomes ``error``.

    Parameters
    ----------
    device
        The device's name in the message, e.g. ``"potentiostat"``.
    what
        The operation, e.g. ``"status read"``.
    awaitable
        The signal operation(s).
    ioc
        Which IOC to check, e.g. ``"the potentiostat's IOC"``.
    error
        The `DeviceUnreachableError` subclass to raise.
    """
    try:
        return await awaitable
    except (TimeoutError, NotConnectedError) as err:
        pv = str(err) or "a PV"
        raise error(f"{device}: {what} failed: {pv} did not answer (is {ioc} running?)") from err
    except CANothing as err:  # falsy: a bluesky status showing it would name nothing
        raise error(f"{device}: {what} failed: Channel Access {err} (is {ioc} running?)") from err
