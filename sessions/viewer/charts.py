"""Charts drawn on the server as SVG (no script, no assets): stacked bars of usage and
the branch tree. Every text is escaped; the SVG goes into the page as it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from .. import admin

# Series colours (CSS classes in viewer.css, so the page's theme decides them).
SERIES = ("input", "output")


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its label and the value of each series, stacked bottom up."""

    label: str
    values: tuple[int, ...]
    href: str | None = None


def _nice_max(value: int) -> int:
    """A round number at or above ``value`` for the top of the axis."""
    if value <= 0:
        return 1
    step = int(10 ** (len(str(value)) - 1))
    return -(-value // step) * step


def bar_chart(
    bars: Sequence[Bar], *, series: Sequence[str] = SERIES, title: str, unit: str = "tokens"
) -> Markup:
    """Stacked vertical bars with a value axis; at most a few hundred bars (a chart of
    more would be unreadable: the caller shows the last ones)."""
    width, height, left, bottom, top = 640, 220, 56, 34, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = _nice_max(max((sum(b.values) for b in bars), default=0))
    slot = plot_w / max(len(bars), 1)
    bar_w = max(2.0, min(48.0, slot * 0.7))
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        value = peak * tick // 4
        y = top + plot_h - plot_h * tick / 4
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{value:,}</text>"
        )
    every = max(1, len(bars) // 16)  # label at most ~16 bars
    for n, bar in enumerate(bars):
        x = left + slot * n + (slot - bar_w) / 2
        y = top + plot_h
        parts = []
        for name, value in zip(series, bar.values, strict=True):
            h = plot_h * value / peak
            y -= h
            parts.append(
                f'<rect class="bar {escape(name)}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(bar.label)}: '
                f"{value:,} {escape(name)} {escape(unit)}</title></rect>"
            )
        body = "".join(parts)
        if bar.href:
            body = f'<a href="{escape(bar.href)}">{body}</a>'
        out.append(body)
        if n % every == 0:
            out.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{escape(bar.label)}</text>'
            )
    legend_x = left
    for name in series:
        out.append(
            f'<rect class="bar {escape(name)}" x="{legend_x}" y="{height - 12}" '
            f'width="10" height="10"/><text class="axis" x="{legend_x + 14}" '
            f'y="{height - 3}">{escape(name)}</text>'
        )
        legend_x += 90
    out.append("</svg>")
    return Markup("".join(out))


def tree_chart(nodes: Sequence[admin.TreeNode], href: dict[str, str]) -> Markup:
    """The branch tree: one lane per branch (in tree order), a dot per user turn, and
    a curve from the fork point on the parent's lane (after its turn ``fork_turn``)
    to the branch's first own turn. Each lane links to its branch's history."""
    lane_h, left, turn_w = 34, 12, 26
    label_w = 8 * max((len(node.branch_id) + 10 for node in nodes), default=10)
    longest = max((node.user_turns for node in nodes), default=0)
    width = label_w + left + turn_w * (longest + 1) + 20
    height = lane_h * len(nodes) + 16
    lane = {node.branch_id: n for n, node in enumerate(nodes)}
    out = [
        f'<svg class="tree" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" '
        f'aria-label="branch tree" xmlns="http://www.w3.org/2000/svg">',
        "<title>branch tree</title>",
    ]

    def x_of(turn: int) -> float:
        return label_w + left + turn_w * turn

    def y_of(n: int) -> float:
        return 12 + lane_h * n + lane_h / 2

    for n, node in enumerate(nodes):
        y = y_of(n)
        start = node.fork_turn or 0
        if node.parent_branch_id is not None and node.parent_branch_id in lane:
            py = y_of(lane[node.parent_branch_id])
            fx = x_of(start)
            out.append(
                f'<path class="fork" d="M{fx:.1f},{py:.1f} C{fx:.1f},{y:.1f} '
                f'{fx + turn_w / 2:.1f},{y:.1f} {fx + turn_w:.1f},{y:.1f}"/>'
                f'<circle class="forkpoint" cx="{fx:.1f}" cy="{py:.1f}" r="5">'
                f"<title>{escape(node.branch_id)} forks here (after turn {start} of "
                f"{escape(node.parent_branch_id)})</title></circle>"
            )
        first = start + 1 if node.parent_branch_id is not None else 1
        end = max(node.user_turns, first - 1)
        if end >= first:
            out.append(
                f'<line class="lane{" current" if node.is_current else ""}" '
                f'x1="{x_of(first):.1f}" x2="{x_of(end):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            )
        for turn in range(first, end + 1):
            out.append(f'<circle class="turn" cx="{x_of(turn):.1f}" cy="{y:.1f}" r="3.5"/>')
        label = node.branch_id + (" (current)" if node.is_current else "")
        out.append(
            f'<a href="{escape(href[node.branch_id])}"><text class="lanelabel" x="{left}" '
            f'y="{y + 4:.1f}">{escape(label)}</text></a>'
        )
    out.append("</svg>")
    return Markup("".join(out))
