"""The process's event loop for range requests, run in one daemon thread.

Every request of every ``RangeClient`` in a process runs on this loop, so a round of a window
read is one hand-off from the calling thread (``run``), however many GETs it holds, and the
requests in flight share one thread instead of one blocked thread each (docs/s3.md, "Why
aiohttp"). Started on first use; a forked child starts its own.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
_LOCK = threading.Lock()
_LOOP: asyncio.AbstractEventLoop | None = None
_PID = -1
_OPEN: set = set()  # aiohttp sessions not closed yet (closed at exit)


def loop() -> asyncio.AbstractEventLoop:
    """The running loop of this process (started on the first call)."""
    global _LOOP, _PID
    with _LOCK:
        if _LOOP is None or _PID != os.getpid():
            _LOOP, _PID = asyncio.new_event_loop(), os.getpid()
            _OPEN.clear()  # a forked child's copies belong to the parent's loop
            threading.Thread(target=_LOOP.run_forever, name="spx-ranges-loop", daemon=True).start()
        return _LOOP


def run(coro: Awaitable[T]) -> T:
    """Run ``coro`` on the loop and wait for its result (never call it from the loop)."""
    return asyncio.run_coroutine_threadsafe(coro, loop()).result()


def opened(session) -> None:
    """Track an aiohttp session made on the loop (loop thread only)."""
    _OPEN.add(session)


def closed(session) -> None:
    _OPEN.discard(session)


def close_soon(session) -> None:
    """Close ``session`` on the loop without waiting (a client collected without close())."""
    if session is not None and _LOOP is not None and _PID == os.getpid() and _LOOP.is_running():
        asyncio.run_coroutine_threadsafe(_close(session), _LOOP)


async def _close(session) -> None:
    closed(session)
    await session.close()


@atexit.register
def _shutdown() -> None:
    """Close the sessions still open, so the process exits without aiohttp's warnings."""
    if _LOOP is None or _PID != os.getpid() or not _OPEN:
        return

    async def close_all():
        await asyncio.gather(*(_close(s) for s in list(_OPEN)), return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(close_all(), _LOOP).result(timeout=5)
    except Exception:  # exiting anyway: nothing left to report to
        pass
