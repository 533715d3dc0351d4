"""Small SVG charts for the training flow's pictures: the tuning history, the parameter importances and
the gate's decision.

Plain SVG text (no plotting library to import, nothing to rasterise): sharp at any zoom, a few KB, and
shown as an image by MLflow's artifact viewer and any browser. Each bar and point carries a ``<title>``,
so hovering shows its exact value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evergreen.gate import GateDecision

TEAL, GREY, RED, INK, FAINT = "#2a9d8f", "#8d99ae", "#e63946", "#222222", "#dddddd"
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got {lo} .. {hi}")
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if (hi - lo) / (m * power) <= count + 2)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def _tick_label(v: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(v) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return f"{v:.{decimals}f}".replace("-", "\u2212")


def padded(lo: float, hi: float, share: float = 0.06) -> tuple[float, float]:
    """[lo, hi] widened by ``share`` of its span on each side (a flat range gets a small span)."""
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    return lo - span * share, hi + span * share


@dataclass
class Svg:
    """An SVG document built from a few primitives; :meth:`text` returns the markup."""

    width: int
    height: int
    parts: list[str] = field(default_factory=list)

    def rect(self, x: float, y: float, w: float, h: float, fill: str, tip: str | None = None) -> None:
        x, w = (x + w, -w) if w < 0 else (x, w)
        y, h = (y + h, -h) if h < 0 else (y, h)
        body = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(
            f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" fill="{fill}">{body}</rect>'
        )

    def line(
        self, x1: float, y1: float, x2: float, y2: float, stroke: str = INK, width: float = 1, dash: str = ""
    ) -> None:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" stroke="{stroke}" '
            f'stroke-width="{width}"{d}/>'
        )

    def polyline(self, points: Iterable[tuple[float, float]], stroke: str, width: float = 2) -> None:
        pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        self.parts.append(f'<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-width="{width}"/>')

    def circle(self, x: float, y: float, r: float, fill: str, tip: str | None = None) -> None:
        body = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{r}" fill="{fill}">{body}</circle>')

    def label(
        self,
        x: float,
        y: float,
        s: str,
        size: float = 12,
        anchor: str = "start",
        fill: str = INK,
        bold: bool = False,
        rotate: float = 0,
    ) -> None:
        extra = ' font-weight="bold"' if bold else ""
        if rotate:
            extra += f' transform="rotate({rotate} {_num(x)} {_num(y)})"'
        self.parts.append(
            f'<text x="{_num(x)}" y="{_num(y)}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{extra}>'
            f"{escape(s)}</text>"
        )

    def text(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="{FONT}">'
            f'<rect width="100%" height="100%" fill="white"/>' + "".join(self.parts) + "</svg>\n"
        )


@dataclass
class Panel:
    """A plotting area at (left, top) of size (width, height), with linear x and y scales."""

    svg: Svg
    left: float
    top: float
    width: float
    height: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def x(self, v: float) -> float:
        lo, hi = self.x_range
        return self.left + (v - lo) / (hi - lo or 1.0) * self.width

    def y(self, v: float) -> float:
        lo, hi = self.y_range
        return self.top + self.height - (v - lo) / (hi - lo or 1.0) * self.height

    def frame(self, title: str, x_label: str = "", y_label: str = "", x_ticks: bool = True) -> None:
        s = self.svg
        bottom = self.top + self.height
        y_ticks = nice_ticks(*self.y_range)
        for t in y_ticks:
            y = self.y(t)
            s.line(self.left, y, self.left + self.width, y, FAINT)
            s.label(self.left - 6, y + 4, _tick_label(t, y_ticks), 11, "end")
        if x_ticks:
            ticks = nice_ticks(*self.x_range)
            for t in ticks:
                x = self.x(t)
                s.line(x, bottom, x, bottom + 4)
                s.label(x, bottom + 17, _tick_label(t, ticks), 11, "middle")
        s.line(self.left, bottom, self.left + self.width, bottom)
        s.line(self.left, self.top, self.left, bottom)
        s.label(self.left + self.width / 2, self.top - 10, title, 13, "middle")
        if x_label:
            s.label(self.left + self.width / 2, bottom + 36, x_label, 12, "middle")
        if y_label:
            s.label(self.left - 48, self.top + self.height / 2, y_label, 12, "middle", rotate=-90)


def legend(svg: Svg, x: float, y: float, items: Sequence[tuple[str, str]]) -> None:
    for i, (color, name) in enumerate(items):
        svg.rect(x, y + i * 18 - 10, 12, 12, color)
        svg.label(x + 18, y + i * 18, name, 11)


def history_chart(trials: Sequence[dict[str, Any]], metric: str = "validation ROC AUC") -> str:
    """Every trial's objective value (pruned trials at the value they were stopped with, in grey) and
    the best value so far. ``trials``: dicts with ``number``, ``state`` and ``value``."""
    svg = Svg(760, 420)
    done = [t for t in trials if t.get("value") is not None and t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t.get("value") is not None and t["state"] == "PRUNED"]
    numbers = [int(t["number"]) for t in trials] or [0]
    values = [float(t["value"]) for t in [*done, *pruned]] or [0.0, 1.0]
    p = Panel(svg, 80, 50, 520, 300, padded(min(numbers), max(numbers), 0.03), padded(min(values), max(values)))
    p.frame(f"Optimisation history: {len(done)} complete, {len(pruned)} pruned", "trial", metric)
    for t in pruned:
        svg.circle(p.x(t["number"]), p.y(t["value"]), 3, GREY, f"trial {t['number']} pruned at {t['value']:.4f}")
    best = -math.inf
    steps: list[tuple[float, float]] = []
    for t in sorted(done, key=lambda t: int(t["number"])):
        svg.circle(p.x(t["number"]), p.y(t["value"]), 4, TEAL, f"trial {t['number']}: {t['value']:.4f}")
        if t["value"] > best:
            if steps:
                steps.append((p.x(t["number"]), steps[-1][1]))
            best = float(t["value"])
            steps.append((p.x(t["number"]), p.y(best)))
    if steps:
        steps.append((p.x(max(numbers)), steps[-1][1]))
        svg.polyline(steps, RED)
        svg.label(p.left + p.width, p.top - 10, f"best {best:.4f}", 12, "end", RED)
    legend(svg, 620, 70, [(TEAL, "complete trial"), (GREY, "pruned trial"), (RED, "best so far")])
    return svg.text()


def importance_chart(importances: dict[str, float], title: str = "Hyperparameter importance (fANOVA)") -> str:
    """One horizontal bar per parameter, largest first, with its value."""
    items = sorted(importances.items(), key=lambda kv: -kv[1])
    row = 26
    svg = Svg(760, 90 + row * max(len(items), 1))
    top = max((v for _, v in items), default=1.0) or 1.0
    p = Panel(svg, 170, 50, 500, row * max(len(items), 1), (0.0, top * 1.12), (0.0, 1.0))
    svg.label(p.left + p.width / 2, 30, title, 13, "middle")
    for i, (name, v) in enumerate(items):
        y = p.top + i * row
        svg.rect(p.left, y + 4, p.x(v) - p.left, row - 8, TEAL, f"{name}: {v:.3f}")
        svg.label(p.left - 8, y + row / 2 + 4, name, 12, "end")
        svg.label(p.x(v) + 6, y + row / 2 + 4, f"{v:.3f}", 11)
    svg.line(p.left, p.top, p.left, p.top + p.height)
    return svg.text()


def gate_chart(d: GateDecision, max_slice_regression: float) -> str:
    """Left: holdout metrics of challenger and champion. Right: ROC AUC change per supported slice, red
    where the gate found it broke the non-regression rule, with the limit drawn (or each slice's AUC on a
    cold start). The title carries the verdict and the confidence interval of the AUC gain."""
    supported = [s for s in d.slices if s["supported"]]
    row = 20
    height = max(420, 140 + row * len(supported))
    svg = Svg(1200, height)
    ci = ""
    if d.auc_diff:
        a = d.auc_diff
        ci = f": AUC gain {a['mean']:+.4f}, {a['confidence']:.0%} CI [{a['lower']:+.4f}, {a['upper']:+.4f}]"
    title = f"gate {'PASS' if d.passed else 'FAIL'}{' (cold start)' if d.cold_start else ''}{ci}"
    svg.label(600, 26, title, 16, "middle", TEAL if d.passed else RED, bold=True)

    names = list(d.challenger)
    left = Panel(svg, 70, 70, 360, height - 150, (0.0, float(len(names))), (0.0, 1.0))
    left.frame("holdout metrics (AUCs: higher is better; losses: lower)", x_ticks=False)
    width = 0.38 if d.champion else 0.6
    for i, n in enumerate(names):
        groups = [(d.challenger[n], TEAL, "challenger")]
        if d.champion:
            groups.append((d.champion[n], GREY, "champion"))
        for j, (v, color, who) in enumerate(groups):
            x0 = i + 0.5 - width * len(groups) / 2 + j * width
            svg.rect(
                left.x(x0),
                left.y(v),
                left.x(x0 + width) - left.x(x0),
                left.y(0) - left.y(v),
                color,
                f"{who} {n}: {v:.4f}",
            )
        svg.label(left.x(i + 0.5), left.top + left.height + 18, n.replace("_", " "), 11, "middle")
    legend(svg, 445, 90, [(TEAL, "challenger"), *([(GREY, "champion")] if d.champion else [])])

    if d.champion and supported:
        values = [float(s["delta"]) for s in supported]
        lo, hi = padded(min([*values, -max_slice_regression, 0.0]), max([*values, 0.0]))
        title_right, x_label = "per-slice change", "ROC AUC change, challenger \u2212 champion"
    else:
        values = [float(s["challenger_auc"]) for s in supported]
        lo, hi = 0.0, 1.0
        title_right, x_label = "per-slice ROC AUC", "challenger ROC AUC (no champion to compare)"
    right = Panel(svg, 700, 70, 460, row * max(len(supported), 1), (lo, hi), (0.0, 1.0))
    bottom = right.top + right.height
    ticks = nice_ticks(lo, hi)
    for t in ticks:
        svg.line(right.x(t), right.top, right.x(t), bottom, FAINT)
        svg.label(right.x(t), bottom + 17, _tick_label(t, ticks), 11, "middle")
    svg.label(right.left + right.width / 2, right.top - 10, title_right, 13, "middle")
    svg.label(right.left + right.width / 2, bottom + 36, x_label, 12, "middle")
    base = 0.0 if d.champion else lo
    for i, (s, v) in enumerate(zip(supported, values, strict=True)):
        y = right.top + i * row
        color = RED if s["regressed"] else TEAL
        tip = (
            f"{s['slice']}={s['value']} ({s['rows']} rows): {v:+.4f}"
            if d.champion
            else f"{s['slice']}={s['value']}: {v:.4f}"
        )
        svg.rect(right.x(base), y + 3, right.x(v) - right.x(base), row - 6, color, tip)
        svg.label(right.left - 8, y + row / 2 + 4, f"{s['slice']}={s['value']}", 10, "end")
    if d.champion and supported:
        svg.line(right.x(0), right.top, right.x(0), bottom, INK)
        limit = right.x(-max_slice_regression)
        svg.line(limit, right.top, limit, bottom, RED, 1.5, "6 4")
        svg.line(right.left, bottom + 56, right.left + 28, bottom + 56, RED, 1.5, "6 4")
        svg.label(
            right.left + 34, bottom + 60, f"limit \u2212{max_slice_regression}: a slice below it fails the gate", 11
        )
    return svg.text()
