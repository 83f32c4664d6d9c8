"""The fan-out benchmark's report: medians of each kind of run, printed as tables with their
ratios, and returned for the JSON record and the goals.

Each ``*_summary`` and ``*_table`` prints its part of the report on stdout (progress goes to
stderr) and returns the figures it printed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from matrix import (
    CAPACITY_BROADCASTS_PER_S,
    CAPACITY_P95_MS,
    CAPACITY_STEPS,
    field,
    lateness_ms,
    phase,
    within_capacity,
)
from servers import NODE, SOCKETIO, Result


@dataclass(frozen=True)
class Metric:
    """One figure of a load-generator run: how to read it and which direction is better."""

    label: str
    read: Callable[[Result], float | None]
    higher_is_better: bool


def _cpu_per_delivery(result: Result) -> float | None:
    """Server CPU (us) per delivery in the burst, from fields both load generators print."""
    burst = phase(result, "burst")
    if not burst or not burst["delivered"]:
        return None
    cpu_s = float(burst["serverCpuPct"]) / 100 * float(burst["phaseWall"])
    return cpu_s * 1e6 / float(burst["delivered"])


def _health_p99(result: Result) -> float | None:
    burst = phase(result, "burst")
    p99: float | None = (burst.get("healthcheck") or {}).get("p99") if burst else None
    return p99


METRICS = (
    Metric("connections/s", lambda r: r.get("connectPerSec"), higher_is_better=True),
    Metric("RSS KB/connection", lambda r: r.get("rssPerConnKb"), higher_is_better=False),
    Metric("deliveries/s (burst)", field("burst", "deliveriesPerSec"), higher_is_better=True),
    Metric("latency p50 ms (burst)", field("burst", "latP50ms"), higher_is_better=False),
    Metric("latency p99 ms (burst)", field("burst", "latP99ms"), higher_is_better=False),
    Metric("latency p50 ms (paced)", field("paced", "latP50ms"), higher_is_better=False),
    Metric("latency p95 ms (paced)", field("paced", "latP95ms"), higher_is_better=False),
    Metric("latency p99 ms (paced)", field("paced", "latP99ms"), higher_is_better=False),
    Metric("server CPU us/delivery", _cpu_per_delivery, higher_is_better=False),
    Metric("health p99 ms (burst)", _health_p99, higher_is_better=False),
)


def median(values: Sequence[float | None]) -> float | None:
    """Median of the known values (None when there is none)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def median_of(runs: Sequence[Result], *keys: str) -> float | None:
    """Median of one figure of every run: ``run[keys[0]][keys[1]]...``."""
    figures = []
    for run in runs:
        figure: Any = run
        for key in keys:
            figure = figure[key]
        figures.append(figure)
    return median(figures)


def fmt(value: float | None) -> str:
    """A figure with three significant digits, or a dash."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio(app: float | None, base: float | None) -> float | None:
    """The app's figure over the baseline's."""
    return app / base if app is not None and base else None


def fan_out_table(n: int, results: dict[str, list[Result]], app: str) -> Result:
    """Print the medians at one N, every server's with its ratio to Node's; return them."""
    medians = {
        name: {m.label: median([m.read(r) for r in runs]) for m in METRICS}
        for name, runs in results.items()
    }
    others = [name for name in results if name != app]
    base = NODE if NODE in results else None
    print(f"\nN={n}  (medians of {len(results[app])}; ratios: {app} / each other server)")
    for name, runs in results.items():
        if short := [r["connected"] for r in runs if r["connected"] < n]:
            print(
                f"  WARNING: {name} connected only {short} of {n}: its figures are not comparable"
            )
    print(f"  {'figure':26} {app:>10}" + "".join(f" {name:>10} {'ratio':>6}" for name in others))
    for m in METRICS:
        a = medians[app][m.label]
        line = f"  {m.label:26} {fmt(a):>10}"
        for name in others:
            b = medians[name][m.label]
            line += f" {fmt(b):>10} {fmt(ratio(a, b)):>6}"
        r = ratio(a, medians[base][m.label]) if base else None
        if r is not None:
            line += "  better" if (r >= 1) == m.higher_is_better else "  worse"
        print(line)
    return medians


def socketio_table(n: int, medians: Result, app: str) -> Result:
    """Print Socket.IO's medians beside the raw WebSockets' at one N; return the ratios."""
    sio, raw = medians[SOCKETIO], medians[app]
    print(f"\nN={n}: Socket.IO on /socket.io/ beside raw WebSockets on /_ws/ (medians)")
    print(f"  {'figure':26} {'Socket.IO':>10} {'raw':>10} {'ratio':>7}")
    ratios: Result = {}
    for m in METRICS:
        r = ratios[m.label] = ratio(sio[m.label], raw[m.label])
        better = "" if r is None else ("  better" if (r >= 1) == m.higher_is_better else "  worse")
        print(f"  {m.label:26} {fmt(sio[m.label]):>10} {fmt(raw[m.label]):>10} {fmt(r):>7}{better}")
    return ratios


def channels_summary(n: int, results: dict[str, list[Result]]) -> Result:
    """Medians of the channel layouts, printed, with the ratio to the default stream."""
    burst_rate = field("burst", "deliveriesPerSec")
    figures = {
        "deliveries/s": burst_rate,
        "broadcasts/s": _broadcasts_per_second,
        "p99 ms (paced)": field("paced", "latP99ms"),
        "CPU us/delivery": field("burst", "serverCpuUsPerDelivery"),
    }
    summary: Result = {}
    print(f"\nChannels: {n} clients (medians of {len(next(iter(results.values())))})")
    print(f"  {'layout':34} " + " ".join(f"{label:>16}" for label in figures) + "  vs default")
    base = median([burst_rate(r) for r in results["0"]]) if "0" in results else None
    for k, runs in results.items():
        layout = "default stream" if k == "0" else f"{k} channels of {n // int(k)}"
        medians = {label: median([read(r) for r in runs]) for label, read in figures.items()}
        medians["vs default"] = ratio(medians["deliveries/s"], base)
        complete = all(field("burst", "complete")(r) for r in runs)
        summary[layout] = {**medians, "complete": complete}
        cells = " ".join(f"{fmt(medians[label]):>16}" for label in figures)
        flag = "" if complete else "  INCOMPLETE"
        print(f"  {layout:34} {cells}  {fmt(medians['vs default']):>10}{flag}")
    return summary


def _broadcasts_per_second(result: Result) -> float | None:
    """Broadcasts the burst made per second: deliveries/s over clients per broadcast."""
    rate = field("burst", "deliveriesPerSec")(result)
    channels = result.get("cfg", {}).get("channels", 0)
    reach = result.get("connected", 0) / channels if channels else result.get("connected", 0)
    return rate / reach if rate and reach else None


def slow_summary(results: dict[str, dict[str, list[Result]]]) -> Result:
    """Medians of the slow-client runs per server, printed."""
    summary: Result = {}
    print("\nOne client that never reads (burst; the other clients' figures):")
    for name, runs in results.items():
        figures: Result = {}
        for variant, variant_runs in runs.items():
            growth = [_growth(r) for r in variant_runs]
            figures[variant] = {
                "deliveries/s": median(
                    [field("burst", "deliveriesPerSec")(r) for r in variant_runs]
                ),
                "p99 ms": median([field("burst", "latP99ms")(r) for r in variant_runs]),
                "memory growth KB": median(growth),
                "complete": all(field("burst", "complete")(r) for r in variant_runs),
            }
        slow = [r.get("slowClient", {}) for r in runs["with_slow"]]
        figures["slow client cut off"] = [bool(s.get("closed_by_server")) for s in slow]
        figures["p99 change"] = ratio(figures["with_slow"]["p99 ms"], figures["alone"]["p99 ms"])
        extra = [
            (w or 0) - (a or 0)
            for w, a in zip(
                [_growth(r) for r in runs["with_slow"]],
                [_growth(r) for r in runs["alone"]],
                strict=True,
            )
        ]
        figures["extra memory KB"] = median(extra)
        alone_growth = [g for g in (_growth(r) for r in runs["alone"]) if g is not None]
        # RSS moves in pages and allocator arenas: the spread without the slow client is the noise.
        figures["noise KB"] = max(alone_growth) - min(alone_growth) if alone_growth else None
        summary[name] = figures
        alone, with_slow = figures["alone"], figures["with_slow"]
        print(
            f"  {name:8} deliveries/s {fmt(alone['deliveries/s'])} ->"
            f" {fmt(with_slow['deliveries/s'])}"
            f", p99 {fmt(alone['p99 ms'])} -> {fmt(with_slow['p99 ms'])} ms"
            f" (x{fmt(figures['p99 change'])}), all delivered: {with_slow['complete']}"
            f", RSS growth in the burst {fmt(alone['memory growth KB'])} ->"
            f" {fmt(with_slow['memory growth KB'])} KB (extra {fmt(figures['extra memory KB'])} KB)"
            f", noise {fmt(figures['noise KB'])} KB"
            f", slow client cut off: {figures['slow client cut off']}"
        )
    return summary


def wave_summary(label: str, results: dict[str, list[Result]]) -> Result:
    """Medians of the reconnect-wave runs per server, printed."""
    summary: Result = {}
    print(f"\nReconnect wave, {label}:")
    for name, runs in results.items():
        outcomes: dict[str, int] = {}
        for r in runs:
            for outcome, count in r["outcome"].items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        s: Result = {
            "wave s": median_of(runs, "wave_seconds"),
            "replay max s": median_of(runs, "replay_max_s"),
            "live max silence ms": median_of(runs, "live_max_silence_ms"),
            **_health(runs),
            "health errors": sum(sum(r["health"]["errors"].values()) for r in runs),
            "CPU ms/replay": median_of(runs, "cpu_per_replay_ms"),
            "outcomes": outcomes,
        }
        summary[name] = s
        print(
            f"  {name:8} wave {fmt(s['wave s'])} s (slowest replay {fmt(s['replay max s'])} s),"
            f" live clients' longest silence {fmt(s['live max silence ms'])} ms,"
            f" health p99 {fmt(s['health p99 ms'])} ms (max {fmt(s['health max ms'])},"
            f" {s['health errors']} errors), server CPU {fmt(s['CPU ms/replay'])} ms per replay,"
            f" {outcomes}"
        )
    return summary


def _health(runs: Sequence[Result]) -> Result:
    """The health check's p99 and slowest answer during each run (medians), in ms."""
    return {
        "health p99 ms": median_of(runs, "health", "p99"),
        "health max ms": median_of(runs, "health", "max"),
    }


def deploy_summary(n: int, results: dict[str, list[Result]]) -> Result:
    """Medians of the simulated deploys per drain, printed."""
    summary: Result = {}
    print(f"\nA deploy: {n} clients move from the old process to the new one")
    for label, runs in results.items():
        s: Result = {
            "reconnected": min(r["reconnected"] for r in runs),
            "peak per 100 ms": median_of(runs, "peak_per_100ms"),
            "spread s": median(
                [r["last_s"] - r["first_s"] for r in runs if r["first_s"] is not None]
            ),
            "old exit s": median_of(runs, "old_exit_s"),
            **_health(runs),
        }
        summary[label] = s
        print(
            f"  {label:12} {s['reconnected']}/{n} reconnected, spread over {fmt(s['spread s'])} s,"
            f" peak {fmt(s['peak per 100 ms'])} per 100 ms, old process exited after"
            f" {fmt(s['old exit s'])} s, new process's health p99 {fmt(s['health p99 ms'])} ms"
            f" (max {fmt(s['health max ms'])})"
        )
    return summary


def _growth(result: Result) -> float | None:
    burst = phase(result, "burst")
    if burst is None:
        return None
    # The shared kit's client.js has no rssBeforeKb: the RSS after connecting is its equivalent.
    before = burst["rssBeforeKb"] if "rssBeforeKb" in burst else result["rss1Kb"]
    return float(burst["peakRssKb"]) - float(before)


def capacity_summary(results: dict[str, list[Result]]) -> Result:
    """Per server, the most clients a step held, and each step's p95; printed."""
    print(
        f"\nCapacity: clients served while the p95 latency of {CAPACITY_BROADCASTS_PER_S} "
        f"broadcasts/s to all, and the last one's lateness, stay under {CAPACITY_P95_MS:.0f} ms"
    )
    summary: Result = {}
    for name, steps in results.items():
        held = [r["cfg"]["n"] for r in steps if within_capacity(r)]
        p95s = {r["cfg"]["n"]: field("paced", "latP95ms")(r) for r in steps}
        late = {r["cfg"]["n"]: lateness_ms(r) for r in steps}
        summary[name] = {
            "clients": max(held, default=0),
            "p95 ms by clients": p95s,
            "last broadcast late ms by clients": late,
        }
        ladder = ", ".join(f"{n:,}: {fmt(p95s[n])}/{fmt(late[n])} ms" for n in p95s)
        top = "" if len(held) < len(CAPACITY_STEPS) else " (the top step)"
        print(f"  {name:10} {max(held, default=0):>7,}{top}   p95/last late: {ladder}")
    return summary


def idle_summary(n: int, results: dict[str, list[Result]]) -> Result:
    """Medians of the idle-connection runs per server, printed."""
    summary: Result = {}
    print(f"\n{n} idle connections:")
    for name, runs in results.items():
        summary[name] = {
            "connected": min(r["connected"] for r in runs),
            "open at end": min(r["openAtEnd"] for r in runs),
            "RSS KB/connection": median_of(runs, "rssPerConnKb"),
            "connections/s": median_of(runs, "connectPerSec"),
        }
        s = summary[name]
        print(
            f"  {name:8} connected {s['connected']}, still open after the hold {s['open at end']}, "
            f"{fmt(s['RSS KB/connection'])} KB/connection, {fmt(s['connections/s'])} connections/s"
        )
    return summary
