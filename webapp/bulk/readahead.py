"""Run an iterator one step ahead of its consumer, in a thread of its own.

The bulk import uses it to parse and validate the next batch of a file while
the request's thread waits on the database for the current one: psycopg2 and
sqlite3 release the GIL while a statement runs, so the two overlap.

The helper thread must never touch the database. The scoped session is
thread-local: a `Session()` there would be a second session, on a second
connection, outside the request's transaction, and no teardown would ever
remove it. What it runs (CSV parsing, marshmallow) needs no application
context either, and gets none.
"""

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar, cast

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


@contextmanager
def read_ahead(items: Iterator[T], name: str = "read-ahead") -> Iterator[Iterator[T]]:
    """Iterate `items` in a helper thread named `name`, ahead of the consumer by at
    most two items: one finished and waiting, one in the making.

    An exception raised by `items` is raised in the consumer, in place of the item
    it prevented. Leaving the block, normally or by an exception, stops the helper
    once its current item is made, closes `items` and waits for the thread, so
    nothing outlives the block. (A helper blocked reading a slow stream keeps the
    block waiting until its read returns: there is no interrupting a read.)
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            try:
                for item in items:
                    handoff.put(item)
                    if stop.is_set():
                        return
            finally:
                close = getattr(items, "close", None)
                if close:
                    close()
            handoff.put(_END)
        except BaseException as error:  # handed over: the consumer raises it
            handoff.put(_Failed(error))

    def consume() -> Iterator[T]:
        while (item := handoff.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield cast(T, item)

    helper = threading.Thread(target=produce, name=name, daemon=True)
    helper.start()
    try:
        yield consume()
    finally:
        stop.set()
        while helper.is_alive():
            try:  # empty the hand-off, so that a put() blocked on it returns
                handoff.get_nowait()
            except queue.Empty:
                helper.join(0.01)
