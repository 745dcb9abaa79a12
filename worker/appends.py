"""The append batcher: the appends of every streaming run of a process, written together.

A run queues its append and waits (each run has at most one queued, so a batch
holds at most one per reply). The append thread takes all that are queued and
hands them to ``services.reply_appends_write``: one UPDATE (one round trip and
one commit, so one WAL flush) for all of them, on the one connection this thread
keeps; their deltas in one Redis round trip; then the runs go on. When one run
streams, that is one UPDATE per append; with a hundred, the writes of a whole
round of tokens cost about one. Runs need no connection of their own while they
stream (chatsite/settings.py, the pool).

Every append names the row version it extends, so a batch whose outcome is
unknown (the connection broke around the commit) is simply sent again
(``worker.dbretry``): what was written is found, never written twice.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field

from messages_app import services
from worker.dbretry import drop_connection, retrying

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Queued:
    append: services.ReplyAppend
    done: threading.Event = field(default_factory=threading.Event)
    result: services.Appended | None = None
    error: BaseException | None = None


class AppendQueue:
    MAX_BATCH = 500
    IDLE = 1.0  # seconds without appends before the connection goes back to the pool

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def append(self, append: services.ReplyAppend) -> services.Appended | None:
        """Write ``append`` with those of the other runs; return once it is committed
        and published. None: the row is no longer this attempt's. Raises
        ``DatabaseUnavailable`` when the database stayed away too long."""
        request = _Queued(append)
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="reply-appends", daemon=True)
                self._thread.start()
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.IDLE)
            except queue.Empty:
                drop_connection()  # idle: back to the pool (or closed, without one)
                first = self._queue.get()
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception as error:
                drop_connection()
                if len(batch) > 1:
                    # One bad append must not fail the others; sending them again
                    # is safe (each names its version).
                    for request in batch:
                        try:
                            self._write([request])
                        except Exception as each_error:
                            drop_connection()
                            request.error = each_error
                else:
                    batch[0].error = error
            finally:
                for request in batch:
                    request.done.set()

    @staticmethod
    def _write(batch: list[_Queued]) -> None:
        appends = [request.append for request in batch]
        results = retrying(
            lambda: services.reply_appends_write(appends=appends), what="writing appends"
        )
        for request, result in zip(batch, results, strict=True):
            request.result = result


appends = AppendQueue()
