"""Coalescing writes of frames: what is written in one loop iteration leaves as one message.

Rule: ``write`` never blocks and never reorders. It queues the frame; one flush task, started by
the first frame queued, sends everything queued by then as WebSocket messages of at most
``max_message`` bytes (and at most ``BATCH_MAX``: a large frame, a snapshot chunk, goes alone,
not copied into a bigger message), and loops while more arrived during
its send (a peer that reads slowly makes the batches grow instead of the number of sends). The
point is the system calls: the leader's profile showed socket sends at 13-33% of its time with
one send per HTTP request and answer; under load a batch carries many frames per send.

A send that fails (the connection broke) closes the writer: queued and later frames are
dropped, and ``on_error`` is told once, so the connection's owner fails whatever waits for an
answer — a frame is never silently lost while its caller waits forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["BATCH_MAX", "FrameWriter"]

BATCH_MAX = 256 * 1024
"""Largest batch of several frames: beyond this, joining frames costs more copying (and the
client's masking of one large message) than the sends it saves. Measured with 1 MiB snapshot
chunks from 16 senders at once: 309 chunks/s when joined up to the peer's limit, 644 with this
cap (``tests/network/bench_transport.py``); small frames batch as before."""


class FrameWriter:
    """Queues frames and sends them in batches through ``send`` (see the module rule).

    Args:
        send: sends one message (``ws.send_bytes``).
        max_message: largest message the reader accepts, in bytes.
        on_error: called once with the exception of the first failed send.
    """

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        max_message: int,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._send = send
        self.max_message = min(max_message, BATCH_MAX)
        self._on_error = on_error
        self._queue: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.messages = 0  # messages sent: frames / messages is the batching achieved
        self.frames = 0

    def write(self, frame: bytes) -> None:
        """Queue ``frame``; it leaves with the next flush (this loop iteration's batch)."""
        if self.closed:
            return
        self._queue.append(frame)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())

    def close(self) -> None:
        """Drop what is queued and refuse further frames (the connection is going away)."""
        self.closed = True
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _take(self) -> bytes:
        queue = self._queue
        if len(queue) == 1:
            self._queue = []
            return queue[0]
        size = count = 0
        for frame in queue:
            if count and size + len(frame) > self.max_message:
                break
            size += len(frame)
            count += 1
        self._queue = queue[count:]
        return b"".join(queue[:count])

    async def _flush(self) -> None:
        try:
            while self._queue and not self.closed:
                before = len(self._queue)
                message = self._take()
                self.frames += before - len(self._queue)
                self.messages += 1
                await self._send(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport broke: aiohttp raises several classes
            self.close()
            self._on_error(exc)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
