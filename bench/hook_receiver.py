"""The webhook receiver both senders of bench/delivery.py post to: an aiohttp server that notes arrivals.

    python bench/hook_receiver.py PORT

`POST /hook/{n}` answers 204 at once and keeps (arrival time, n, body). The wall clock is read on
arrival, before anything else, so it compares with the commit times the bench notes in its own
process on the same machine. `GET /count` answers how many notifications arrived so far (the
`Notifications` arrays summed); `POST /dump?path=FILE` writes the arrivals as JSON lines
`{"t", "hook", "body"}` to FILE and forgets them. Bodies are parsed when dumped, not on arrival, so
the receiver costs both senders the same small amount of CPU per request.
"""

from __future__ import annotations

import json
import sys
import time

from aiohttp import web

ARRIVALS: list[tuple[float, str, bytes]] = []
COUNT = [0]


async def hook(request: web.Request) -> web.Response:
    arrived = time.time()
    body = await request.read()
    ARRIVALS.append((arrived, request.match_info["n"], body))
    COUNT[0] += body.count(b'"Action":')
    return web.Response(status=204)


async def count(request: web.Request) -> web.Response:
    return web.json_response({"notifications": COUNT[0], "requests": len(ARRIVALS)})


async def dump(request: web.Request) -> web.Response:
    path = request.query["path"]
    arrivals = ARRIVALS[:]
    ARRIVALS.clear()
    COUNT[0] = 0
    with open(path, "w") as out:
        for arrived, n, body in arrivals:
            out.write(json.dumps({"t": arrived, "hook": n, "body": json.loads(body)}) + "\n")
    return web.json_response({"requests": len(arrivals)})


def main() -> None:
    app = web.Application(client_max_size=16 * 2**20)
    app.add_routes([web.post("/hook/{n}", hook), web.get("/count", count), web.post("/dump", dump)])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
