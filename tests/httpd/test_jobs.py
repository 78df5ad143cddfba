"""httpd.jobs.Ahead: batches made ahead on a worker, bounded, in order, failures handed on."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from httpd.jobs import Ahead


@pytest.fixture
def pool():
    p = ThreadPoolExecutor(2, thread_name_prefix="test-ahead")
    yield p
    p.shutdown(wait=True)


def on(pool):
    async def run(fn):
        return await asyncio.get_running_loop().run_in_executor(pool, fn)
    return run


class Maker:
    """Batches [i] for i < n, then [] (the end); counts calls and notes the threads."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at
        self.calls = 0
        self.concurrent = 0
        self.most_concurrent = 0
        self.threads = set()
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            self.threads.add(threading.current_thread().name)
            i = self.calls
            self.calls += 1
            if i == self.fail_at:
                raise OSError(f"read failed at {i}")
            return [i] if i < self.n else []
        finally:
            with self.lock:
                self.concurrent -= 1


async def test_batches_come_in_order_and_end(pool):
    make = Maker(50)
    ahead = Ahead(on(pool), make, 4)
    got = []
    while batch := await ahead.next():
        got += batch
        if len(got) % 7 == 0:
            await asyncio.sleep(0.001)          # a consumer slower now and then
    await ahead.close()
    assert got == list(range(50))
    assert await ahead.next() == []             # the end, again
    assert make.most_concurrent == 1            # never two makers at once
    assert all(t.startswith("test-ahead") for t in make.threads)


async def test_a_consumer_that_stops_taking_holds_no_worker():
    one = ThreadPoolExecutor(1)                 # the maker's thread is the pool's only one
    make = Maker(1000)
    ahead = Ahead(on(one), make, 3)
    assert await ahead.next() == [0]
    # the thread goes back to the pool once the window is full: other work gets it
    assert await asyncio.wait_for(on(one)(lambda: "free"), 10) == "free"
    assert make.calls == 4                      # the one taken and three waiting, no more
    assert [await ahead.next() for _ in range(3)] == [[1], [2], [3]]
    assert await ahead.next() == [4]            # taking from the full window started it again
    await ahead.close()
    calls = make.calls
    await asyncio.sleep(0.05)
    assert make.calls == calls                  # closed: nothing more is made
    one.shutdown()


async def test_a_failure_is_raised_where_it_is_reached(pool):
    make = Maker(100, fail_at=5)
    ahead = Ahead(on(pool), make, 4)
    got = []
    with pytest.raises(OSError, match="read failed at 5"):
        while batch := await ahead.next():
            got += batch
    assert got == [0, 1, 2, 3, 4]               # everything before it, in order
    with pytest.raises(OSError):                # and again: it is not lost by raising once
        await ahead.next()
    await ahead.close()
    assert make.calls == 6                      # nothing made after the failure


async def test_close_waits_for_the_batch_in_the_making(pool):
    started, release = threading.Event(), threading.Event()
    done = []

    def slow():
        started.set()
        release.wait(5)
        done.append(True)
        return [1]

    ahead = Ahead(on(pool), slow, 2)
    first = asyncio.ensure_future(ahead.next())
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    closing = asyncio.ensure_future(ahead.close())
    await asyncio.sleep(0.02)
    assert not closing.done()                   # the maker is still reading
    release.set()
    await closing
    assert done == [True]
    assert await first == [1]                   # what was made is still handed out


async def test_a_pool_that_is_gone_is_an_error_not_a_hang(pool):
    pool.shutdown()
    ahead = Ahead(on(pool), Maker(3), 2)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(ahead.next(), 5)
    await ahead.close()


async def test_an_end_given_as_none_ends(pool):
    items = iter([[1], None])
    ahead = Ahead(on(pool), lambda: next(items), 4)
    assert await ahead.next() == [1]
    assert await asyncio.wait_for(ahead.next(), 5) is None
    await ahead.close()


def test_depth_must_be_positive():
    async def main():
        with pytest.raises(ValueError):
            Ahead(on(None), Maker(1), 0)
    asyncio.run(main())
