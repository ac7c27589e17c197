"""A local WeChat Work group robot: answers ``{"errcode":0,"errmsg":"ok"}`` and notes arrivals.

Every ``bench-<run>-<n>`` token found in a message is recorded with the time it arrived
(``time.monotonic()``, which on Linux is one clock for every process), so the bench can compute
the delivery latency from its own POST to the bridge. ``GET /bench/arrivals`` returns them.

    python -m bench.robot --port 9003
"""

from __future__ import annotations

import argparse
import json
import re
import time

from aiohttp import web

ARRIVALS = web.AppKey("arrivals", dict[str, float])
MESSAGES = web.AppKey("messages", list[int])
TOKEN = re.compile(r"bench-[0-9a-f]+-[0-9]+")


async def send(request: web.Request) -> web.Response:
    arrived = time.monotonic()
    raw = await request.read()
    try:
        body = json.loads(raw)
        content = json.dumps(body, ensure_ascii=False)
    except ValueError:
        return web.json_response({"errcode": 40001, "errmsg": "invalid json"})
    arrivals = request.app[ARRIVALS]
    for token in TOKEN.findall(content):
        arrivals.setdefault(token, arrived)
    request.app[MESSAGES][0] += 1
    return web.json_response({"errcode": 0, "errmsg": "ok"})


async def arrivals(request: web.Request) -> web.Response:
    return web.json_response(
        {"messages": request.app[MESSAGES][0], "arrivals": request.app[ARRIVALS]}
    )


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app() -> web.Application:
    app = web.Application()
    app[ARRIVALS] = {}
    app[MESSAGES] = [0]
    app.router.add_post("/cgi-bin/webhook/send", send)
    app.router.add_get("/bench/arrivals", arrivals)
    app.router.add_get("/bench/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
