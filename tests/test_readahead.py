"""read_ahead: an iterator run one step ahead in a helper thread that never outlives its block."""

import threading
import time
from contextlib import nullcontext

import pytest

from webapp.bulk.readahead import read_ahead


def numbers(upto, made, closed=None, fail_at=None):
    """0..upto-1, noting each one made (and by which thread) and whether it was closed."""
    try:
        for n in range(upto):
            if n == fail_at:
                raise ValueError(f"no {n}")
            made.append((n, threading.current_thread().name))
            yield n
    finally:
        if closed is not None:
            closed.set()


def test_items_arrive_in_order_made_by_the_helper_thread():
    made = []

    with read_ahead(numbers(5, made), name="helper") as items:
        assert list(items) == [0, 1, 2, 3, 4]

    assert {thread for _, thread in made} == {"helper"}


def test_an_error_of_the_items_is_raised_in_the_consumer_after_the_items_before_it():
    received = []

    with pytest.raises(ValueError, match="no 3"), read_ahead(numbers(10, [], fail_at=3)) as items:
        for n in items:
            received.append(n)

    assert received == [0, 1, 2]


def test_the_helper_stays_at_most_two_items_ahead():
    made = []

    with read_ahead(numbers(100, made)) as items:
        for consumed, _ in enumerate(items, start=1):
            time.sleep(0.01)  # a slow consumer: the helper has every chance to run ahead
            assert len(made) <= consumed + 2
            if consumed == 5:
                break


def helper_alive(name):
    return any(thread.name == name for thread in threading.enumerate())


@pytest.mark.parametrize("leave", ["break", "raise"])
def test_leaving_early_stops_the_helper_and_closes_the_items(leave):
    closed = threading.Event()

    with (
        pytest.raises(RuntimeError) if leave == "raise" else nullcontext(),
        read_ahead(numbers(1_000_000, [], closed), name="helper") as items,
    ):
        for n in items:
            if n == 2:
                if leave == "raise":
                    raise RuntimeError("the consumer failed")
                break

    assert closed.is_set()
    assert not helper_alive("helper")


def test_a_consumer_that_never_iterates_still_stops_the_helper():
    made, closed = [], threading.Event()

    with read_ahead(numbers(1_000_000, made, closed), name="helper"):
        time.sleep(0.05)

    assert closed.is_set() and len(made) <= 2
    assert not helper_alive("helper")


def test_an_error_of_the_items_after_the_consumer_left_is_not_raised_and_nothing_hangs():
    with read_ahead(numbers(10, [], fail_at=3), name="helper") as items:
        assert next(items) == 0
        time.sleep(0.05)  # the helper meets the error while nobody listens

    assert not helper_alive("helper")


def test_leaving_while_the_helper_is_making_an_item_waits_for_that_item_only():
    slow_read = threading.Event()
    made = []

    def slow():
        yield 0
        slow_read.set()
        time.sleep(0.3)  # a slow read, say: it cannot be interrupted
        for n in range(1, 1_000_000):
            made.append(n)
            yield n

    started = time.perf_counter()
    with read_ahead(slow(), name="helper") as items:
        assert next(items) == 0
        assert slow_read.wait(timeout=5)

    assert 0.2 < time.perf_counter() - started < 5
    assert len(made) <= 2
    assert not helper_alive("helper")
