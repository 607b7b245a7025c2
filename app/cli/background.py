"""Iterating a client's reads off the main thread, so that Ctrl-C never lands inside httpx."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def in_background(items: Iterable[T]) -> Iterator[T]:
    """What `items` yields, iterated in a daemon thread. Ctrl-C then interrupts this thread's wait on
    a queue, never the HTTP client's code: a KeyboardInterrupt raised inside httpcore can leave one
    of its pool's locks held, and the command then hangs instead of exiting (seen in
    tests/integration/test_client_cli.py). At exit the daemon thread is simply dropped."""
    box: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)

    def pump() -> None:
        try:
            for item in items:
                box.put((item, None))
        except BaseException as exc:  # raised again in the caller's thread
            box.put((_END, exc))
        else:
            box.put((_END, None))

    threading.Thread(target=pump, name="feed", daemon=True).start()
    while True:
        item, error = box.get()
        if error is not None:
            raise error
        if item is _END:
            return
        yield item
