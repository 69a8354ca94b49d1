"""The baseline sender of bench/delivery.py: a plain aiohttp client posting given bodies, nothing else.

    python bench/plain_client.py burst FILE --base URL --concurrency N
    python bench/plain_client.py paced FILE --base URL --rate EVENTS_PER_S

FILE holds JSON lines `{"hook", "body"}` (burst) or `{"i", "hook", "body"}` (paced), each a POST of
`body` to `URL/hook/{hook}`. `burst` posts them all as fast as N connections allow. `paced` posts
the lines of event `i` at `t0 + i / rate`, each as its own request, as a producer that called the
callbacks itself right after its commit would. No outbox, no database, no signing, no retries: the
cost of the HTTP alone. Prints `{"t0", "seconds", "cpu_seconds", "failed"}` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import defaultdict

import aiohttp

HEADERS = {"Content-Type": "application/json"}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    try:
        async with session.post(url, data=body, headers=HEADERS, allow_redirects=False) as r:
            await r.read()
            return 200 <= r.status < 300
    except (aiohttp.ClientError, OSError):
        return False


async def burst(lines: list[dict], base: str, concurrency: int) -> dict:
    posts = [
        (f"{base}/hook/{line['hook']}", json.dumps(line["body"], separators=(",", ":")).encode()) for line in lines
    ]
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for post in posts:
        queue.put_nowait(post)
    failed = 0

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal failed
            while not queue.empty():
                url, body = queue.get_nowait()
                if not await _post(session, url, body):
                    failed += 1

        t0, cpu0 = time.time(), _cpu()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {"t0": t0, "seconds": time.time() - t0, "cpu_seconds": _cpu() - cpu0, "failed": failed}


async def paced(lines: list[dict], base: str, rate: float) -> dict:
    by_event: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
    for line in lines:
        body = json.dumps(line["body"], separators=(",", ":")).encode()
        by_event[line["i"]].append((f"{base}/hook/{line['hook']}", body))
    results: list[asyncio.Task[bool]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2
        t0, cpu0 = time.time() + 0.2, _cpu()
        for i in sorted(by_event):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule of a steady producer, not a wait for a result
            results += [loop.create_task(_post(session, url, body)) for url, body in by_event[i]]
        done = await asyncio.gather(*results)
        return {"t0": t0, "seconds": time.time() - t0, "cpu_seconds": _cpu() - cpu0, "failed": done.count(False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("burst", "paced"))
    parser.add_argument("file")
    parser.add_argument("--base", required=True)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    with open(args.file) as f:
        lines = [json.loads(line) for line in f]
    if args.mode == "burst":
        out = asyncio.run(burst(lines, args.base, args.concurrency))
    else:
        out = asyncio.run(paced(lines, args.base, args.rate))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
