"""The stream v2 publisher of ``opmap sim-dcu``: a ZeroMQ PUSH socket sending CBOR messages.

While ``stream/config/mode`` is ``enabled``, every series (``arm``) sends a ``start``
message, every frame an ``image`` message carrying the frame's bitshuffle-LZ4 chunk exactly
as the file writer stored it (tag 56500 ``["bslz4", 4, bytes]`` in a uint32 typed array), and
the end of the series (last trigger, ``disarm``) an ``end`` message; see
`opmap.devices.stream2`.

A PUSH socket cannot send while no client is connected: each message is retried for
`SEND_PATIENCE_S` (a client connecting at ``arm`` still gets it), then counted in
``stream/status/dropped`` and dropped, as a DCU's full buffer does. ``drop_images`` is a
test-only fault (``PUT /opmap/api/1/stream_drop``): the next N image messages are not sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from opmap.devices.stream2 import (
    CompressedFrame,
    encode_end,
    encode_image,
    encode_start,
)

__all__ = ["SEND_PATIENCE_S", "StreamPublisher"]

#: How long one message waits for a client before it is dropped (s).
SEND_PATIENCE_S = 2.0
#: The only channel of a single-threshold Eiger.
CHANNEL = "threshold_1"


class StreamPublisher:
    """A bound PUSH socket and the series it is streaming.

    Parameters
    ----------
    endpoint : str
        ZeroMQ endpoint to bind, e.g. ``"tcp://127.0.0.1:31001"``.
    """

    def __init__(self, endpoint: str) -> None:
        self.socket = zmq.Context.instance().socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        self.endpoint = endpoint
        self.series: tuple[int, str] | None = None
        self.images_sent = 0
        #: Messages dropped because no client took them in time.
        self.dropped = 0
        #: Test-only fault: image messages still to drop, and the ids dropped so far.
        self.drop_images = 0
        self.dropped_image_ids: list[tuple[int, int]] = []

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)

    async def start(self, series_id: int, fields: Mapping[str, Any]) -> None:
        """Send the ``start`` message of a new series."""
        self.series = (series_id, uuid.uuid4().hex)
        self.images_sent = 0
        await self._send(encode_start(*self.series, **fields))

    async def images(self, chunks: list[tuple[int, bytes]], shape: tuple[int, int]) -> None:
        """Send ``image`` messages for the series' next frames (``(filter mask, chunk)``)."""
        if self.series is None:
            return
        for mask, chunk in chunks:
            image_id = self.images_sent
            self.images_sent += 1
            if self.drop_images > 0:
                self.drop_images -= 1
                self.dropped_image_ids.append((self.series[0], image_id))
                continue
            algorithm = "none" if mask & 1 else "bslz4"
            frame = CompressedFrame(algorithm, 4, chunk, shape, np.dtype("<u4"))
            await self._send(encode_image(*self.series, image_id, {CHANNEL: frame}))

    async def end(self) -> None:
        """Send the ``end`` message of the running series (once)."""
        series, self.series = self.series, None
        if series is not None:
            await self._send(encode_end(*series))

    async def _send(self, message: bytes) -> None:
        deadline = time.monotonic() + SEND_PATIENCE_S
        while True:
            try:
                self.socket.send(message, zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                if time.monotonic() > deadline:
                    self.dropped += 1
                    return
                await asyncio.sleep(0.005)
