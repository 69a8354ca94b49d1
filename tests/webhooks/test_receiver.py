"""The test receiver behaves like a real HTTP server where webhook tests lean on it: it takes as many
connections at once as the worker opens, and keeps them alive between requests."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time

import aiohttp
from receiver import Receiver, receiving

from webhooks.config import DeliveryConfig


def test_the_receiver_queues_as_many_connections_as_the_worker_opens_at_once() -> None:
    """The worker opens up to `concurrency` connections to one callback host in the same instant; all of them
    are queued by the kernel until the receiver accepts them, none dropped (a listen backlog of 5 drops the rest,
    and TCP sends their SYNs again only after 1, 3, 7, 15 and 31 s: past the attempt's 30 s timeout)."""
    receiver = Receiver()  # listening but not accepting yet: only the listen queue holds the connections
    wanted = DeliveryConfig().concurrency
    sockets = [socket.socket() for _ in range(wanted)]
    selector = selectors.DefaultSelector()
    try:
        for s in sockets:
            s.setblocking(False)
            s.connect_ex(receiver.server.server_address)
            selector.register(s, selectors.EVENT_WRITE)
        connected = 0
        deadline = time.monotonic() + 0.5  # handshakes on loopback take microseconds; a dropped SYN waits 1 s
        while connected < wanted and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                selector.unregister(key.fileobj)
                connected += 1
        assert connected == wanted, f"{wanted - connected} of {wanted} connections were not taken"
    finally:
        selector.close()
        for s in sockets:
            s.close()
        receiver.server.server_close()


def test_the_receiver_keeps_a_connection_alive_between_requests() -> None:
    """As a flow's callback does over HTTP/1.1, so the worker's reuse of connections is exercised."""

    async def post_twice(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(f"{url}/hook", json={"Notifications": []}) as r:
                    assert r.status == 200 and r.version == aiohttp.HttpVersion11
                    await r.read()

    with receiving() as receiver:
        asyncio.run(post_twice(receiver.url))
        assert len(receiver.received) == 2
        assert receiver.connections == 1
