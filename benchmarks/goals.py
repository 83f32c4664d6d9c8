"""The issues' speed and memory goals, as data: a figure of the report and the bound it must meet.

A goal reads its figure from the report ``run.py`` builds (``report.py``'s summaries, by the keys
they print), with ``{app}`` in a key standing for the app's column. ``check`` prints every goal,
met or not, or "not measured" when its run was skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from matrix import WAVES
from report import fmt, ratio
from servers import NODE, WEBSOCKETS, Result

#: Reads a figure (or a bound) from the report, given the app's column name.
Reader = Callable[[Result, str], Any]


def at(*keys: str) -> Reader:
    """A reader of the report's ``report[key][key]...`` (None where a key is missing)."""

    def read(report: Result, app: str) -> Any:
        value: Any = report
        for key in keys:
            value = value.get(key.format(app=app)) if isinstance(value, dict) else None
        return value

    return read


def over(ours: Reader, theirs: Reader) -> Reader:
    """A reader of the ratio of two figures."""
    return lambda report, app: ratio(ours(report, app), theirs(report, app))


@dataclass(frozen=True)
class Goal:
    """A figure of the report and the bound it must stay on the right side of."""

    label: str
    figure: Reader
    #: A number, or a reader when the bound depends on the run (a setting, the noise measured).
    bound: float | Reader
    at_most: bool
    unit: str = ""
    #: Whether the figure must not even reach the bound.
    strict: bool = False

    def check(self, report: Result, app: str) -> tuple[str, str, bool | None]:
        """(goal, measured, met); met is None when the figure was not measured."""
        value = self.figure(report, app)
        if value is None:
            return self.label, f"{fmt(None)}{self.unit}", None
        bound = self.bound(report, app) if callable(self.bound) else self.bound
        if self.at_most:
            met = value < bound if self.strict else value <= bound
        else:
            met = value > bound if self.strict else value >= bound
        return self.label, f"{fmt(value)}{self.unit}", met


def _fan_out(n: int) -> list[Goal]:
    """At N clients: deliveries/s against each peer, the health check during the burst."""
    rate = "deliveries/s (burst)"
    ours = at("fan_out", str(n), "{app}", rate)
    return [
        *(
            Goal(
                f"deliveries/s >= {bound}x {peer}, N={n}",
                over(ours, at("fan_out", str(n), peer, rate)),
                bound,
                at_most=False,
                unit="x",
            )
            for peer, bound in ((NODE, 1.3), (WEBSOCKETS, 1.1))
        ),
        Goal(
            f"health p99 <= 50 ms during the N={n} burst",
            at("fan_out", str(n), "{app}", "health p99 ms (burst)"),
            50,
            at_most=True,
            unit=" ms",
        ),
    ]


def _slow_client_memory_bound(report: Result, app: str) -> float:
    """The app's buffer limit for one client, plus the RSS noise measured without it (KB)."""
    noise: float | None = at("slow", "{app}", "noise KB")(report, app)
    return float(report["slow_limit"]) / 1024 + (noise or 0)


def _waves(label: str) -> list[Goal]:
    """A reconnect wave: the health check, the live clients' silence, the wave's length."""
    return [
        Goal(
            f"wave ({label}): {goal}",
            at("waves", label, "{app}", figure),
            bound,
            at_most=True,
            unit=unit,
            strict=strict,
        )
        for goal, figure, bound, unit, strict in (
            ("health p99 < 100 ms", "health p99 ms", 100, " ms", True),
            ("live silence < 1 s", "live max silence ms", 1000, " ms", True),
            ("served within 5 s", "wave s", 5 + 0.5, " s", False),
        )
    ]


GOALS: tuple[Goal, ...] = (
    *_fan_out(1000),
    *_fan_out(5000),
    Goal(
        f"connections/s >= {NODE}'s, N=5000",
        over(
            at("fan_out", "5000", "{app}", "connections/s"),
            at("fan_out", "5000", NODE, "connections/s"),
        ),
        1.0,
        at_most=False,
        unit="x",
    ),
    Goal(
        "<= 10 KB RSS per idle connection",
        at("idle", "{app}", "RSS KB/connection"),
        10,
        at_most=True,
        unit=" KB",
    ),
    Goal(
        "every idle connection held",
        at("idle", "{app}", "open at end"),
        at("idle_n"),
        at_most=False,
    ),
    *(
        Goal(
            f"capacity >= {peer}'s",
            over(at("capacity", "{app}", "clients"), at("capacity", peer, "clients")),
            1.0,
            at_most=False,
            unit="x",
        )
        for peer in (NODE, WEBSOCKETS)
    ),
    Goal(
        "slow client: others' p99 within 10%",
        at("slow", "{app}", "p99 change"),
        1.1,
        at_most=True,
        unit="x",
    ),
    Goal(
        "slow client: memory growth <= its limit + noise",
        at("slow", "{app}", "extra memory KB"),
        _slow_client_memory_bound,
        at_most=True,
        unit=" KB",
    ),
    *(goal for label in WAVES for goal in _waves(label)),
    Goal("copier copy < 1.5 s", at("renders", "copy_s"), 1.5, at_most=True, unit=" s", strict=True),
    Goal("copier update < 3 s", at("renders", "update_s"), 3, at_most=True, unit=" s", strict=True),
)


def check(report: Result, app: str) -> list[tuple[str, str, bool | None]]:
    """Print every goal with its figure and verdict; return them as (goal, measured, met)."""
    rows = [goal.check(report, app) for goal in GOALS]
    print("\nGoals:")
    for goal, measured, met in rows:
        verdict = "not measured" if met is None else ("met" if met else "NOT MET")
        print(f"  {goal:48} {measured:>12}  {verdict}")
    return rows
