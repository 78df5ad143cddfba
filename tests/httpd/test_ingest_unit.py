"""read_ahead: the body keeps flowing while a worker handles the last batch, bounded."""

import asyncio

import pytest

from httpd.transfer.ingest import read_ahead


async def test_batches_hold_what_arrived_meanwhile_in_order_and_stop_at_the_limit():
    read = []

    async def body():
        for i in range(40):
            read.append(i)
            yield bytes([i]) * 1000
            await asyncio.sleep(0)

    batches = []
    async for batch in read_ahead(body(), limit=5000):
        batches.append(batch)
        before = len(read)
        await asyncio.sleep(0.01)               # a slow worker: the reader runs ahead ...
        assert len(read) - before <= 5          # ... but never past the limit
    got = [c for b in batches for c in b]
    assert got == [bytes([i]) * 1000 for i in range(40)]
    assert max(len(b) for b in batches) > 1     # chunks that waited came as one batch


async def test_a_failing_body_is_raised_to_the_consumer_and_nothing_is_left_running():
    class Gone(Exception):
        pass

    async def body():
        yield b"a"
        yield b"b"
        raise Gone("the client went away")

    got = []
    with pytest.raises(Gone):
        async for batch in read_ahead(body()):
            got += batch
            await asyncio.sleep(0.01)
    assert got == [b"a", b"b"]
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


async def test_a_consumer_that_stops_early_cancels_the_reader():
    stopped = asyncio.Event()

    async def body():
        try:
            while True:
                yield b"x" * 100
                await asyncio.sleep(0)
        finally:
            stopped.set()

    agen = read_ahead(body(), limit=1000)
    async for _ in agen:
        break
    await agen.aclose()
    await asyncio.wait_for(stopped.wait(), 5)


async def test_a_body_that_ends_before_its_first_batch_is_taken_ends_the_batches():
    async def body():
        yield b"hello"

    batches = [batch async for batch in read_ahead(body())]
    assert batches == [[b"hello"]]
