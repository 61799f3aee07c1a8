"""Prometheus metrics in the text exposition format (version 0.0.4): counters, gauges, histograms.

One small module rather than a dependency: every btcl2 service exposes a handful of figures, most of them
read at scrape time from state the service already keeps (`Gauge.set_function`), so nothing on a hot path
has to remember to count. Services with an aiohttp app add `GET /metrics` to it (`add_route`); the others
run a `MetricsServer` on `--metrics-port`.
"""

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from aiohttp import web

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]
Sample = tuple[str, dict[str, str], float]
"""(sample name, labels, value) of one exposition line."""


def _check_name(name: str) -> None:
    ok = name and (name[0].isalpha() or name[0] in "_:")
    if not ok or not all(c.isalnum() or c in "_:" for c in name):
        raise ValueError(f"invalid metric name {name!r}")


def escape_label(value: str) -> str:
    """A label value as the exposition format quotes it (backslash, double quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, and the format's spellings of infinities and NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Metric:
    """One metric family: a name, help text, label names and its samples per label values."""

    kind: Kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        _check_name(name)
        for label in labels:
            _check_name(label)
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._lock = threading.Lock()  # some services update from worker threads
        self._values: dict[LabelValues, float] = {}
        self._function: Callable[[], float | dict[LabelValues, float]] | None = None

    def _key(self, values: Sequence[str]) -> LabelValues:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        return tuple(str(v) for v in values)

    def set_function(self, fn: Callable[[], float | dict[LabelValues, float]]) -> None:
        """Read the value at scrape time: a number (no labels) or {label values: number}."""
        self._function = fn

    def samples(self) -> list[Sample]:
        """The exposition lines of this family."""
        if self._function is not None:
            try:
                found = self._function()
            except Exception as exc:  # a scrape must not fail because one figure cannot be read now
                log.debug("metrics: %s unavailable: %s", self.name, exc)
                return []
            values = found if isinstance(found, dict) else {(): float(found)}
        else:
            with self._lock:
                values = dict(self._values)
        return [
            (self.name, dict(zip(self.labels, k, strict=True)), float(v)) for k, v in sorted(values.items())
        ]


class Counter(Metric):
    """A value that only goes up (reset when the process restarts); its name ends in `_total`."""

    kind: Kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add `amount` (>= 0) to the sample of `labels`."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(Metric):
    """A value that goes up and down."""

    kind: Kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        """Set the sample of `labels`."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Histogram(Metric):
    """Observations counted in cumulative buckets, with their sum and count."""

    kind: Kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        if "le" in self.labels:
            raise ValueError("'le' is reserved for histogram buckets")
        self.buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self._observed: dict[LabelValues, tuple[list[int], float, int]] = {}

    def observe(self, value: float, *labels: str) -> None:
        """Count one observation."""
        key = self._key(labels)
        with self._lock:
            counts, total, n = self._observed.get(key, ([0] * len(self.buckets), 0.0, 0))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            self._observed[key] = (counts, total + value, n + 1)

    def samples(self) -> list[Sample]:
        """_bucket lines (cumulative, then +Inf), _sum and _count per label values."""
        out: list[Sample] = []
        with self._lock:
            observed = {k: (list(c), s, n) for k, (c, s, n) in self._observed.items()}
        for key, (counts, total, n) in sorted(observed.items()):
            base = dict(zip(self.labels, key, strict=True))
            for bound, count in zip(self.buckets, counts, strict=True):
                out.append((self.name + "_bucket", {**base, "le": format_value(bound)}, float(count)))
            out.append((self.name + "_bucket", {**base, "le": "+Inf"}, float(n)))
            out.append((self.name + "_sum", base, total))
            out.append((self.name + "_count", base, float(n)))
        return out


class Registry:
    """The metric families of one process, rendered together."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def register(self, metric: Metric) -> Metric:
        """Add a family; a second one with the same name is an error."""
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """Create and register a Counter."""
        metric = Counter(name, help_text, labels)
        self.register(metric)
        return metric

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        """Create and register a Gauge."""
        metric = Gauge(name, help_text, labels)
        self.register(metric)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """Create and register a Histogram."""
        metric = Histogram(name, help_text, labels, buckets)
        self.register(metric)
        return metric

    def get(self, name: str) -> Metric | None:
        """A registered family by name."""
        return self._metrics.get(name)

    def render(self) -> str:
        """The whole exposition: # HELP, # TYPE and the samples of every family, in name order."""
        lines = []
        for name in sorted(self._metrics):
            metric = self._metrics[name]
            lines.append(f"# HELP {name} {metric.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            lines.append(f"# TYPE {name} {metric.kind}")
            for sample, labels, value in metric.samples():
                if labels:
                    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
                    lines.append(f"{sample}{{{inner}}} {format_value(value)}")
                else:
                    lines.append(f"{sample} {format_value(value)}")
        return "\n".join(lines) + "\n"

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics."""
        body = self.render()
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    def add_route(self, app: web.Application, path: str = "/metrics") -> None:
        """Serve the exposition at `path` of an existing aiohttp application."""
        app.router.add_get(path, self.handle)


def process_metrics(registry: Registry, service: str) -> None:
    """The figures every btcl2 process exports: which service it is, and since when."""
    import time

    started = time.time()
    registry.gauge("btcl2_info", "Constant 1, labelled with the service this process runs.", ["service"]).set(
        1, service
    )
    registry.gauge("btcl2_start_time_seconds", "Unix time the process started.").set(started)


class MetricsServer:
    """A standalone `GET /metrics` server, for services without an HTTP API; `async def run()`."""

    def __init__(self, registry: Registry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Serve until stop()."""
        from btcl2.httpguard import guarded_app

        app = guarded_app()
        self.registry.add_route(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
            log.info("metrics on http://%s:%d/metrics", self.host, self.port)
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()


def serve_in_thread(registry: Registry, host: str, port: int) -> Callable[[], None]:
    """Run a MetricsServer on its own event loop in a daemon thread (for synchronous services); returns a
    function that stops it."""
    server = MetricsServer(registry, host, port)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_until_complete(server.run())

    thread = threading.Thread(target=main, name="metrics", daemon=True)
    thread.start()
    started.wait(10)

    def stop() -> None:
        loop.call_soon_threadsafe(server.stop)
        thread.join(10)

    return stop


def parse_exposition(text: str) -> dict[str, tuple[str, list[Sample]]]:
    """Parse an exposition back: {family: (type, samples)}. For tests and `btcl2 status`-style readers; it
    accepts what `Registry.render` writes (and the common subset other exporters write)."""
    families: dict[str, tuple[str, list[Sample]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            families[name] = (kind, [])
            continue
        if line.startswith("#"):
            continue
        name, labels, value = _parse_sample(line)
        family = next(
            (f for f in (name, name.rsplit("_", 1)[0]) if f in families),
            None,
        )
        if family is None:
            families[name] = ("untyped", [])
            family = name
        families[family][1].append((name, labels, _parse_value(value)))
    return families


def _parse_value(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


def _parse_sample(line: str) -> tuple[str, dict[str, str], str]:
    if "{" not in line:
        name, value = line.split()[:2]
        return name, {}, value
    name, rest = line.split("{", 1)
    labels: dict[str, str] = {}
    i = 0
    while rest[i] != "}":
        eq = rest.index("=", i)
        key = rest[i:eq].strip().lstrip(",").strip()
        if rest[eq + 1] != '"':
            raise ValueError(f"bad label in {line!r}")
        j, chars = eq + 2, []
        while rest[j] != '"':
            if rest[j] == "\\":
                j += 1
                chars.append({"n": "\n"}.get(rest[j], rest[j]))
            else:
                chars.append(rest[j])
            j += 1
        labels[key] = "".join(chars)
        i = j + 1
        if rest[i] == ",":
            i += 1
    return name, labels, rest[i + 1 :].split()[0]
