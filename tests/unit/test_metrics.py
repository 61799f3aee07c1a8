"""btcl2.metrics: the exposition format, parsed back; labels, escaping, histograms, scrape-time values,
and the aiohttp handler."""

import asyncio
import math

import pytest
from aiohttp import ClientSession

from btcl2.metrics import CONTENT_TYPE, MetricsServer, Registry, format_value, parse_exposition
from btcl2.regtest.process import free_port


def test_counter_gauge_round_trip() -> None:
    reg = Registry()
    c = reg.counter("btcl2_things_total", "Things.", ["state"])
    c.inc("a")
    c.inc("a", amount=2)
    c.inc("b")
    g = reg.gauge("btcl2_level", "A level.")
    g.set(2.5)
    text = reg.render()
    assert "# HELP btcl2_things_total Things.\n# TYPE btcl2_things_total counter\n" in text
    assert 'btcl2_things_total{state="a"} 3\n' in text
    fams = parse_exposition(text)
    assert fams["btcl2_things_total"] == ("counter", [("btcl2_things_total", {"state": "a"}, 3.0),
                                                      ("btcl2_things_total", {"state": "b"}, 1.0)])  # fmt: skip
    assert fams["btcl2_level"] == ("gauge", [("btcl2_level", {}, 2.5)])


def test_label_escaping_round_trips() -> None:
    reg = Registry()
    reg.gauge("x", "X.", ["v"]).set(1, 'a "quoted" \\ back\nslash')
    fams = parse_exposition(reg.render())
    assert fams["x"][1][0][1] == {"v": 'a "quoted" \\ back\nslash'}


def test_histogram_buckets_are_cumulative() -> None:
    reg = Registry()
    h = reg.histogram("btcl2_latency_seconds", "Latency.", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.observe(v)
    kind, samples = parse_exposition(reg.render())["btcl2_latency_seconds"]
    assert kind == "histogram"
    buckets = {lab["le"]: v for name, lab, v in samples if name.endswith("_bucket")}
    assert buckets == {"0.1": 1, "1": 2, "+Inf": 3}
    assert ("btcl2_latency_seconds_count", {}, 3.0) in samples
    assert ("btcl2_latency_seconds_sum", {}, 5.55) in samples


def test_scrape_time_functions_and_failures() -> None:
    reg = Registry()
    reg.gauge("by_state", "By state.", ["state"]).set_function(lambda: {("b",): 2, ("a",): 1})
    reg.gauge("broken", "Cannot be read now.").set_function(lambda: 1 / 0)
    fams = parse_exposition(reg.render())
    assert [lab["state"] for _, lab, _ in fams["by_state"][1]] == ["a", "b"]
    assert fams["broken"] == ("gauge", [])


def test_misuse_is_refused() -> None:
    reg = Registry()
    c = reg.counter("c_total", "C.")
    with pytest.raises(ValueError):
        c.inc(amount=-1)
    with pytest.raises(ValueError):
        c.inc("unexpected label")
    with pytest.raises(ValueError):
        reg.counter("c_total", "again")
    with pytest.raises(ValueError):
        reg.gauge("bad-name", "B.")
    with pytest.raises(ValueError):
        reg.histogram("h", "H.", ["le"])


def test_values() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(math.nan) == "NaN"


def test_server_serves_the_exposition() -> None:
    reg = Registry()
    reg.counter("served_total", "S.").inc()
    port = free_port()

    async def scrape() -> tuple[int, str, str]:
        server = MetricsServer(reg, "127.0.0.1", port)
        task = asyncio.create_task(server.run())
        try:
            for _ in range(100):
                try:
                    async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
                        return r.status, r.headers["Content-Type"], await r.text()
                except OSError:
                    await asyncio.sleep(0.02)
            raise AssertionError("metrics server did not start")
        finally:
            server.stop()
            await task

    status, kind, body = asyncio.run(scrape())
    assert status == 200 and kind == CONTENT_TYPE
    assert parse_exposition(body)["served_total"][1] == [("served_total", {}, 1.0)]
