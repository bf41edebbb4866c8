"""msgpack (de)serialisation of documents for bluesky's 0MQ Publisher / RemoteDispatcher.

bluesky's 0MQ defaults to pickle, which executes code from the network; opmap sends
msgpack. numpy arrays and scalars (which documents may carry) become lists and Python
numbers, as they would in JSON.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["deserialize", "serialize"]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} in a document")


def serialize(message: Any) -> bytes:
    """msgpack bytes of a ``(name, doc)`` pair (numpy values as lists / numbers)."""
    return msgpack.packb(message, default=_plain, use_bin_type=True)


def deserialize(payload: bytes) -> Any:
    """Inverse of :func:`serialize` (lists come back as lists)."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)
