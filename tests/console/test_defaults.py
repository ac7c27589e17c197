"""The console on the built-in defaults (loopback, no auth: what `scripts/run` serves), quick
enough for every run, the floors' included: each page answers, a form renders the sample."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from sheepdog.app import create_app

PAGES = ("/ui/", "/ui/dead-letters", "/ui/playground", "/ui/spend", "/ui/spend.csv")


async def test_every_page_answers_on_the_defaults_and_the_playground_renders(
    aiohttp_client, make_config, registry: CollectorRegistry
) -> None:
    client: TestClient = await aiohttp_client(create_app(make_config(), registry=registry))
    first = await client.get("/", allow_redirects=False)
    assert first.status == 302 and first.headers["Location"] == "/ui/"
    for path in PAGES:
        answer = await client.get(path)
        assert answer.status == 200, (path, await answer.text())
    targets = await (await client.get("/ui/")).text()
    assert "default" in targets and "stdout" in targets
    assert (await client.get("/ui/no-such-page")).status == 404
    playground = await (await client.get("/ui/playground")).text()
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', playground)
    assert match is not None
    form = {"csrf": match.group(1), "target": "default", "source": "sample"}
    rendered = await client.post("/ui/playground", data=form)
    assert rendered.status == 200
    assert "1 message(s) to default" in await rendered.text()
    refused = await client.post("/ui/playground", data={"target": "default", "source": "sample"})
    assert refused.status == 403
