"""Medians, Huddle/Node ratios, goals (issues 5 and 12), the printed table and the PNG chart."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Goal:
    """A target from issue 5 or 12: on the Huddle/Node ratio, or on Huddle's own value."""

    kind: Literal["ratio_ge", "ratio_le", "huddle_ge", "huddle_eq"]
    value: float

    def met(self, huddle: float | None, ratio: float | None) -> bool | None:
        if self.kind in ("ratio_ge", "ratio_le"):
            if ratio is None:
                return None
            return ratio >= self.value if self.kind == "ratio_ge" else ratio <= self.value
        if huddle is None:
            return None
        return huddle >= self.value if self.kind == "huddle_ge" else huddle == self.value

    def text(self) -> str:
        return {
            "ratio_ge": f"≥ {self.value:g}x",
            "ratio_le": f"≤ {self.value:g}x",
            "huddle_ge": f"Huddle ≥ {self.value:,.0f}",
            "huddle_eq": f"Huddle = {self.value:g}",
        }[self.kind]


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    better: Better
    goal: Goal | None = None
    chart: bool = True
    reduce: Literal["median", "sum", "min"] = "median"


PRESENCE = MetricSpec("presenceFramesPerClient", "presence frames per client", "lower", chart=False)
"""Mean `presence_changed` frames a client received (the peer sends none)."""

# Which numbers each scenario kind reports, in table order (storm: `storm_specs`).
SPECS: dict[str, list[MetricSpec]] = {
    "handshake": [
        MetricSpec("handshakesPerSec", "handshakes/s", "higher", Goal("ratio_ge", 1.0)),
        MetricSpec("serverCpuUsPerHandshake", "server CPU µs/handshake", "lower"),
        MetricSpec("p99Ms", "p99 handshake ms", "lower", chart=False),
        MetricSpec("failed", "failed handshakes", "lower", chart=False, reduce="sum"),
        PRESENCE,
    ],
    "reject": [
        MetricSpec(
            "rejectionsPerSec", "expired-token rejections/s", "higher", Goal("ratio_ge", 1.0)
        ),
        MetricSpec("serverCpuUsPerRejection", "server CPU µs/rejection", "lower"),
        MetricSpec("failed", "failed rejections", "lower", chart=False, reduce="sum"),
    ],
    "fanout": [
        MetricSpec("msgsPerSec", "delivered msgs/s", "higher", Goal("ratio_ge", 1.0)),
        MetricSpec("serverCpuUsPerMsg", "server CPU µs/msg", "lower", Goal("ratio_le", 0.5)),
        MetricSpec("p50Ms", "p50 latency ms", "lower"),
        MetricSpec("p99Ms", "p99 latency ms", "lower"),
        MetricSpec(
            "deliveryErrors", "lost+dup+out-of-order", "lower", Goal("huddle_eq", 0), False, "sum"
        ),
        PRESENCE,
    ],
    "rest-fanout": [
        MetricSpec("msgsPerSec", "delivered msgs/s", "higher"),
        MetricSpec("serverCpuUsPerMsg", "server CPU µs/msg", "lower", Goal("ratio_le", 1.0)),
        MetricSpec("p50Ms", "p50 latency ms", "lower"),
        MetricSpec("p99Ms", "p99 latency ms", "lower"),
        MetricSpec(
            "deliveryErrors", "lost+dup+out-of-order", "lower", Goal("huddle_eq", 0), False, "sum"
        ),
        MetricSpec("triggerCallP99Ms", "p99 of one trigger/PATCH call ms", "lower", chart=False),
        PRESENCE,
    ],
    "broadcast": [
        MetricSpec("p99Ms", "one broadcast p99 ms", "lower", Goal("ratio_le", 1.0)),
        MetricSpec("p50Ms", "one broadcast p50 ms", "lower"),
        MetricSpec("serverCpuUsPerMsg", "server CPU µs/msg", "lower", chart=False),
        MetricSpec(
            "deliveryErrors", "lost+dup+out-of-order", "lower", Goal("huddle_eq", 0), False, "sum"
        ),
        PRESENCE,
    ],
    "idle": [
        MetricSpec("rssPerConnKB", "RSS KB per idle connection", "lower"),
        MetricSpec("held", "connections held", "higher", chart=False, reduce="min"),
        PRESENCE,
    ],
    "compression": [
        MetricSpec("msgsPerSec", "delivered msgs/s", "higher"),
        MetricSpec("serverCpuUsPerMsg", "server CPU µs/msg", "lower"),
        MetricSpec("p99Ms", "p99 latency ms", "lower"),
        MetricSpec(
            "deliveryErrors", "lost+dup+out-of-order", "lower", Goal("huddle_eq", 0), False, "sum"
        ),
        PRESENCE,
    ],
    "rest": [
        MetricSpec(
            "requestsPerSec",
            "GET /api/users/{id}/teams req/s",
            "higher",
            Goal("huddle_ge", 2000),  # issue 12, carried over: on one core
            chart=False,
        ),
    ],
}


def storm_specs(phases: Sequence[Sequence[int]]) -> list[MetricSpec]:
    """Per phase: rate, latency, CPU, presence; then memory at the end.

    Issue 12's goals apply to the first phase (one team, on a cold server):
    handshakes/s ≥ 1.0x and p99 ≤ 1.0x Node's.
    """
    out: list[MetricSpec] = []
    for k, (first, last) in enumerate(phases, start=1):
        name = f"phase {k} (users {first:,}-{last:,})"
        one = k == 1
        out += [
            MetricSpec(
                f"phase{k}.handshakesPerSec",
                f"{name}: handshakes/s",
                "higher",
                Goal("ratio_ge", 1.0) if one else None,
            ),
            MetricSpec(f"phase{k}.p50Ms", f"{name}: p50 open→authenticated ms", "lower", None),
            MetricSpec(
                f"phase{k}.p99Ms",
                f"{name}: p99 open→authenticated ms",
                "lower",
                Goal("ratio_le", 1.0) if one else None,
            ),
            MetricSpec(
                f"phase{k}.serverCpuUsPerHandshake",
                f"{name}: server CPU µs/handshake (until quiet)",
                "lower",
            ),
            MetricSpec(
                f"phase{k}.presenceFramesPerClient",
                f"{name}: presence frames per online client",
                "lower",
                chart=False,
            ),
            MetricSpec(
                f"phase{k}.presenceTailMs",
                f"{name}: last frame after last handshake, ms",
                "lower",
                chart=False,
            ),
            MetricSpec(
                f"phase{k}.failed", f"{name}: failed handshakes", "lower", chart=False, reduce="sum"
            ),
        ]
    out += [
        MetricSpec("rssPerConnKB", "RSS KB per connection at the end", "lower"),
        MetricSpec("held", "connections held at the end", "higher", chart=False, reduce="min"),
        PRESENCE,
    ]
    return out


def specs_for(scenario: dict[str, Any]) -> list[MetricSpec]:
    if scenario["kind"] == "storm":
        return storm_specs(scenario.get("phases") or [])
    return SPECS.get(scenario["kind"], [])


def goal_for(scenario_key: str, kind: str, spec: MetricSpec, clients: int) -> Goal | None:
    """Issues 5 and 12's goals; memory and capacity goals apply at their own sizes."""
    if kind in ("idle", "storm") and spec.key == "rssPerConnKB" and clients == 5000:
        return Goal("ratio_le", 1.0)
    if kind == "idle" and spec.key == "held" and clients >= 10_000:
        return Goal("huddle_ge", clients)
    return spec.goal


def reduce_values(values: Sequence[float], how: str) -> float | None:
    if not values:
        return None
    if how == "sum":
        return float(sum(values))
    if how == "min":
        return float(min(values))
    return float(statistics.median(values))


def summarize(
    measurements: Iterable[dict[str, Any]], scenarios: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (scenario, metric): each server's median over rounds and Huddle/Node."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in measurements:
        by_key.setdefault((m["scenario"], m["server"]), []).append(m)
    rows: list[dict[str, Any]] = []
    for scenario in scenarios:
        key, kind = scenario["key"], scenario["kind"]
        for spec in specs_for(scenario):
            values: dict[str, float | None] = {}
            rounds: dict[str, int] = {}
            for server in ("node", "huddle"):
                got = [
                    m["metrics"][spec.key]
                    for m in by_key.get((key, server), [])
                    if isinstance(m.get("metrics", {}).get(spec.key), int | float)
                ]
                values[server] = reduce_values(got, spec.reduce)
                rounds[server] = len(got)
            node, huddle = values["node"], values["huddle"]
            ratio = huddle / node if huddle is not None and node is not None and node != 0 else None
            goal = goal_for(key, kind, spec, int(scenario.get("clients", 0)))
            rows.append(
                {
                    "scenario": key,
                    "title": scenario["title"],
                    "kind": kind,
                    "metric": spec.key,
                    "label": spec.label,
                    "better": spec.better,
                    "reduce": spec.reduce,
                    "node": node,
                    "huddle": huddle,
                    "ratio": ratio,
                    "rounds": rounds,
                    "goal": goal.text() if goal else None,
                    "goalMet": goal.met(huddle, ratio) if goal else None,
                    "chart": spec.chart,
                    "limits": _limits(by_key, key),
                }
            )
    rows.extend(_compression_cost(by_key, scenarios))
    return rows


def _limits(by_key: dict[tuple[str, str], list[dict[str, Any]]], key: str) -> dict[str, Any]:
    """Median server and generator CPU (% of one core) per server: who set the pace."""
    out: dict[str, Any] = {}
    for server in ("node", "huddle"):
        ms = by_key.get((key, server), [])
        for metric in ("serverCpuPct", "loadgenCpuPct"):
            got = [
                m["metrics"][metric]
                for m in ms
                if isinstance(m.get("metrics", {}).get(metric), int | float)
            ]
            out[f"{server}.{metric}"] = reduce_values(got, "median")
    return out


def _compression_cost(
    by_key: dict[tuple[str, str], list[dict[str, Any]]], scenarios: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each server: msgs/s with deflate on ÷ off (same room, events, sizes)."""
    on = next((s for s in scenarios if s["kind"] == "compression" and s["compression"]), None)
    off_key = on.get("pair") if on else None
    if on is None or not off_key:
        return []
    values: dict[str, float | None] = {}
    for server in ("node", "huddle"):

        def median_of(key: str, server: str = server) -> float | None:
            got = [
                m["metrics"]["msgsPerSec"]
                for m in by_key.get((key, server), [])
                if isinstance(m.get("metrics", {}).get("msgsPerSec"), int | float)
            ]
            return reduce_values(got, "median")

        a, b = median_of(on["key"]), median_of(off_key)
        values[server] = a / b if a is not None and b else None
    node, huddle = values["node"], values["huddle"]
    return [
        {
            "scenario": on["key"],
            "title": on["title"],
            "kind": "compression",
            "metric": "onOffRatio",
            "label": "msgs/s deflate on ÷ off",
            "better": "higher",
            "reduce": "median",
            "node": node,
            "huddle": huddle,
            "ratio": huddle / node if huddle is not None and node else None,
            "rounds": {},
            "goal": None,
            "goalMet": None,
            "chart": False,
            "limits": {},
        }
    ]


# --- printing -----------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1000:
        return f"{value:.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    # Near parity, two decimals could print 1.00x for a goal just missed.
    return f"{value:.3f}x" if abs(value - 1.0) < 0.01 else f"{value:.2f}x"


def _pct(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else "—"


def table(rows: Sequence[dict[str, Any]], *, title: str) -> Table:
    out = Table(title=title, title_justify="left", show_lines=False)
    for name, justify in (
        ("scenario", "left"),
        ("metric", "left"),
        ("Node", "right"),
        ("Huddle", "right"),
        ("Huddle/Node", "right"),
        ("goal", "left"),
        ("server CPU% N/H", "right"),
        ("loadgen CPU% N/H", "right"),
    ):
        out.add_column(name, justify=justify, no_wrap=name != "scenario")  # type: ignore[arg-type]
    last = None
    for row in rows:
        met = row["goalMet"]
        mark = "" if met is None else (" [green]met[/]" if met else " [red]not met[/]")
        limits = row["limits"]
        first = row["scenario"] != last
        out.add_row(
            row["title"] if first else "",
            row["label"],
            _fmt(row["node"]),
            _fmt(row["huddle"]),
            _ratio(row["ratio"]),
            (row["goal"] or "") + mark,
            f"{_pct(limits.get('node.serverCpuPct'))}/{_pct(limits.get('huddle.serverCpuPct'))}"
            if first and limits
            else "",
            f"{_pct(limits.get('node.loadgenCpuPct'))}/{_pct(limits.get('huddle.loadgenCpuPct'))}"
            if first and limits
            else "",
        )
        last = row["scenario"]
    return out


def print_table(rows: Sequence[dict[str, Any]], console: Console, *, title: str) -> None:
    console.print(table(rows, title=title))


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The same table as Markdown, for docs/benchmarks.md."""
    lines = [
        "| scenario | metric | Node | Huddle | Huddle/Node | goal | CPU % server N/H | "
        "CPU % generator N/H |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    last = None
    for row in rows:
        met = row["goalMet"]
        goal = row["goal"] or ""
        if met is not None:
            goal += " — **met**" if met else " — **not met**"
        limits = row["limits"]
        first = row["scenario"] != last
        ratio = _ratio(row["ratio"])
        srv = gen = ""
        if first and limits:
            srv = (
                f"{_pct(limits.get('node.serverCpuPct'))}/{_pct(limits.get('huddle.serverCpuPct'))}"
            )
            gen = (
                f"{_pct(limits.get('node.loadgenCpuPct'))}/"
                f"{_pct(limits.get('huddle.loadgenCpuPct'))}"
            )
        lines.append(
            f"| {row['title'] if first else ''} | {row['label']} | {_fmt(row['node'])} | "
            f"{_fmt(row['huddle'])} | {ratio} | {goal} | {srv} | {gen} |"
        )
        last = row["scenario"]
    return "\n".join(lines)


# --- chart ----------------------------------------------------------------------


def _goal_ratio(row: dict[str, Any]) -> float | None:
    text = row.get("goal") or ""
    for sign in ("≥ ", "≤ "):
        if text.startswith(sign) and text.endswith("x"):
            return float(text[len(sign) : -1])
    return None


def render_chart(rows: Sequence[dict[str, Any]], path: Path, *, subtitle: str) -> Path | None:
    """A bar per charted metric from 1.0 to Huddle/Node (log scale), with the issues' goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    charted = [r for r in rows if r["chart"] and r["ratio"] is not None and r["ratio"] > 0]
    if not charted:
        return None
    labels = [f"{r['title']}: {r['label']} ({r['better']} is better)" for r in charted]
    ratios = [float(r["ratio"]) for r in charted]
    colors = []
    for r in charted:
        if r["goalMet"] is True:
            colors.append("#2e7d32")
        elif r["goalMet"] is False:
            colors.append("#c62828")
        else:
            colors.append("#78909c")
    height = max(3.0, 0.42 * len(charted) + 1.8)
    fig, ax = plt.subplots(figsize=(11, height))
    positions = list(range(len(charted)))[::-1]
    ax.barh(
        positions,
        [abs(r - 1.0) for r in ratios],
        left=[min(r, 1.0) for r in ratios],
        color=colors,
        height=0.62,
    )
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    for pos, ratio, row in zip(positions, ratios, charted, strict=True):
        ax.text(
            ratio * 1.05 if ratio >= 1 else ratio / 1.05,
            pos,
            f"{ratio:.2f}x",
            va="center",
            ha="left" if ratio >= 1 else "right",
            fontsize=8,
        )
        goal = _goal_ratio(row)
        if goal is not None:
            ax.plot([goal, goal], [pos - 0.42, pos + 0.42], color="black", linewidth=2)
    lo = min(min(ratios), 0.4) / 2.0
    hi = max(max(ratios), 2.5) * 2.0
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(
        "Huddle ÷ Node, median of rounds (log scale); black tick: the goal (issues 5, 12)"
    )
    ax.set_title(
        "Huddle vs the Node.js Socket.IO peer — green: goal met, red: not met, grey: no goal\n"
        + subtitle,
        fontsize=9,
    )
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
