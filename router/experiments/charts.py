"""Inline SVG charts for the experiment page (no JavaScript, no CDN: the page works offline).

Each function takes plain numbers and returns an ``<svg>`` string; every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#4b5563")
INK, MUTED, GRID = "#111827", "#6b7280", "#e5e7eb"
LABEL_W = 90  # left column for arm names
RIGHT_W = 230  # right column for the numbers
WIDTH = 900  # viewBox width: one chart per row of the page, drawn at about 1:1
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1-2-5 steps)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(low / step), math.ceil(high / step - 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def _fmt(v: float, unit: str = "") -> str:
    text = f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"
    return f"{text}{unit}"


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'role="img" aria-label="{escape(title)}" {FONT} font-size="13">'
            f"<title>{escape(title)}</title>{''.join(body)}</svg>")


def _axis(x0: float, x1: float, y_top: float, y_bottom: float, lo: float, hi: float,
          unit: str) -> tuple[list[str], Callable[[float], float]]:
    ticks = _nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]

    def sx(v: float) -> float:
        return x0 + (x1 - x0) * (v - lo) / (hi - lo)

    parts = []
    for t in ticks:
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{y_top}" x2="{x:.1f}" y2="{y_bottom}" stroke="{GRID}"/>')
        parts.append(f'<text x="{x:.1f}" y="{y_bottom + 16}" text-anchor="middle" fill="{MUTED}" '
                     f'font-size="11">{escape(_fmt(t, unit))}</text>')
    return parts, sx


def split_chart(arms: Sequence[str], observed_pct: Sequence[float], configured_pct: Sequence[float],
                counts: Sequence[int]) -> str:
    """Observed share per arm as bars, the configured weight as a dark tick on each bar."""
    width, row_h, top = WIDTH, 34, 10
    height = top + row_h * len(arms) + 26
    x0, x1 = LABEL_W, width - RIGHT_W
    parts, sx = _axis(x0, x1, top, top + row_h * len(arms), 0, 100, " %")
    for i, arm in enumerate(arms):
        y = top + i * row_h + 7
        w = sx(observed_pct[i]) - x0
        cx = sx(configured_pct[i])
        parts.append(f'<text x="{x0 - 8}" y="{y + 14}" text-anchor="end" fill="{INK}" font-weight="600">'
                     f"{escape(arm)}</text>")
        parts.append(f'<rect x="{x0}" y="{y}" width="{max(w, 0):.1f}" height="20" rx="3" fill="{color(i)}"/>')
        parts.append(f'<line x1="{cx:.1f}" y1="{y - 4}" x2="{cx:.1f}" y2="{y + 24}" stroke="{INK}" '
                     f'stroke-width="2.5"><title>configured {configured_pct[i]:.1f} %</title></line>')
        parts.append(f'<text x="{x1 + 10}" y="{y + 14}" fill="{INK}">{observed_pct[i]:.1f} % '
                     f'<tspan fill="{MUTED}">({counts[i]:,} · want {configured_pct[i]:.0f} %)</tspan></text>')
    return _svg(width, height, parts, "observed traffic split against configured weights")


def interval_chart(arms: Sequence[str], rates: Sequence[float | None], lows: Sequence[float | None],
                   highs: Sequence[float | None], confidence: float) -> str:
    """Accept rate per arm as a dot with its confidence interval as a whisker (axis zoomed in)."""
    width, row_h, top = WIDTH, 34, 10
    height = top + row_h * len(arms) + 26
    known = [v for v in [*lows, *highs] if v is not None]
    lo = max(0.0, (min(known) if known else 0.0) * 100 - 2)
    hi = min(100.0, (max(known) if known else 1.0) * 100 + 2)
    x0, x1 = LABEL_W, width - RIGHT_W
    parts, sx = _axis(x0, x1, top, top + row_h * len(arms), lo, hi, " %")
    for i, arm in enumerate(arms):
        y = top + i * row_h + 17
        parts.append(f'<text x="{x0 - 8}" y="{y + 4}" text-anchor="end" fill="{INK}" font-weight="600">'
                     f"{escape(arm)}</text>")
        rate, low, high = rates[i], lows[i], highs[i]
        if rate is None or low is None or high is None:
            parts.append(f'<text x="{x0 + 6}" y="{y + 4}" fill="{MUTED}">no data</text>')
            continue
        a, b, c = sx(low * 100), sx(high * 100), sx(rate * 100)
        parts.append(f'<line x1="{a:.1f}" y1="{y}" x2="{b:.1f}" y2="{y}" stroke="{color(i)}" stroke-width="3"/>')
        for end in (a, b):
            parts.append(f'<line x1="{end:.1f}" y1="{y - 7}" x2="{end:.1f}" y2="{y + 7}" stroke="{color(i)}" '
                         f'stroke-width="2"/>')
        parts.append(f'<circle cx="{c:.1f}" cy="{y}" r="6" fill="{color(i)}" stroke="white" stroke-width="1.5"/>')
        parts.append(f'<text x="{x1 + 10}" y="{y + 4}" fill="{INK}">{rate * 100:.1f} % '
                     f'<tspan fill="{MUTED}">[{low * 100:.1f}, {high * 100:.1f}]</tspan></text>')
    return _svg(width, height, parts, f"accept rate with {confidence * 100:g} % confidence intervals")


QUANTILE_MARKS = (("p50", "circle"), ("p90", "square"), ("p95", "diamond"), ("p99", "triangle"))


def _mark(shape: str, x: float, y: float, fill: str) -> str:
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y}" r="5.5" fill="{fill}"/>'
    if shape == "square":
        return f'<rect x="{x - 5:.1f}" y="{y - 5}" width="10" height="10" fill="{fill}"/>'
    if shape == "diamond":
        return f'<path d="M{x:.1f} {y - 7} l7 7 l-7 7 l-7 -7 z" fill="{fill}"/>'
    return f'<path d="M{x:.1f} {y - 7} l7 12 h-14 z" fill="{fill}"/>'


def latency_chart(arms: Sequence[str], quantiles: Sequence[dict[str, float]]) -> str:
    """p50..p99 per arm on one axis: the spread from p50 to p99 is the tail a person looks for."""
    width, row_h, top = WIDTH, 34, 30
    height = top + row_h * len(arms) + 26
    values = [v for q in quantiles for v in q.values()]
    x0, x1 = LABEL_W, width - RIGHT_W
    parts, sx = _axis(x0, x1, top, top + row_h * len(arms), 0, max(values) * 1.05 if values else 1, " ms")
    for j, (name, shape) in enumerate(QUANTILE_MARKS):  # legend
        lx = x0 + j * 80
        parts.append(_mark(shape, lx + 6, 12, MUTED))
        parts.append(f'<text x="{lx + 18}" y="17" fill="{MUTED}">{name}</text>')
    for i, arm in enumerate(arms):
        y = top + i * row_h + 17
        parts.append(f'<text x="{x0 - 8}" y="{y + 4}" text-anchor="end" fill="{INK}" font-weight="600">'
                     f"{escape(arm)}</text>")
        q = quantiles[i]
        if not q:
            parts.append(f'<text x="{x0 + 6}" y="{y + 4}" fill="{MUTED}">no data</text>')
            continue
        parts.append(f'<line x1="{sx(q["p50"]):.1f}" y1="{y}" x2="{sx(q["p99"]):.1f}" y2="{y}" '
                     f'stroke="{color(i)}" stroke-width="3" opacity="0.5"/>')
        for name, shape in QUANTILE_MARKS:
            parts.append(_mark(shape, sx(q[name]), y, color(i)))
        parts.append(f'<text x="{x1 + 10}" y="{y + 4}" fill="{INK}">p50 {q["p50"]:.1f} '
                     f'<tspan fill="{MUTED}">· p99 {q["p99"]:.1f} ms</tspan></text>')
    return _svg(width, height, parts, "latency quantiles per arm")


def timeline_chart(arms: Sequence[str], buckets: Sequence[Sequence[int]], start_labels: Sequence[str]) -> str:
    """Rows per time bucket, stacked by arm: how the split moved while weights changed."""
    width, height, top, bottom = WIDTH, 220, 30, 30
    x0, x1 = 44, width - 10
    peak = max((sum(b) for b in buckets), default=0) or 1
    ticks = _nice_ticks(0, peak, 4)
    top_v = ticks[-1]

    def sy(v: float) -> float:
        return height - bottom - (height - bottom - top) * v / top_v

    parts = []
    for j, arm in enumerate(arms):  # legend
        parts.append(f'<rect x="{x0 + j * 90}" y="6" width="12" height="12" rx="2" fill="{color(j)}"/>'
                     f'<text x="{x0 + j * 90 + 17}" y="16" fill="{INK}">{escape(arm)}</text>')
    for t in ticks:
        parts.append(f'<line x1="{x0}" y1="{sy(t):.1f}" x2="{x1}" y2="{sy(t):.1f}" stroke="{GRID}"/>'
                     f'<text x="{x0 - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" fill="{MUTED}" '
                     f'font-size="11">{t:g}</text>')
    n = len(buckets)
    bar_w = (x1 - x0) / max(n, 1)
    for k, counts in enumerate(buckets):
        base = 0.0
        for j, c in enumerate(counts):
            if c <= 0:
                continue
            y_top, y_base = sy(base + c), sy(base)
            parts.append(f'<rect x="{x0 + k * bar_w + 1:.1f}" y="{y_top:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                         f'height="{y_base - y_top:.1f}" fill="{color(j)}">'
                         f"<title>{escape(arms[j])}: {c}</title></rect>")
            base += c
    for k in (0, n // 2, n - 1) if n else ():
        parts.append(f'<text x="{x0 + (k + 0.5) * bar_w:.1f}" y="{height - 10}" text-anchor="middle" '
                     f'fill="{MUTED}" font-size="11">{escape(start_labels[k])}</text>')
    return _svg(width, height, parts, "verifications over time by arm")


def _frame(x0: float, x1: float, y0: float, y1: float, xticks: Sequence[tuple[float, str]],
           yticks: Sequence[tuple[float, str]]) -> list[str]:
    """Grid lines and labels of a plot area whose ticks are already in pixels."""
    parts = []
    for x, label in xticks:
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="{GRID}"/>'
                     f'<text x="{x:.1f}" y="{y1 + 16}" text-anchor="middle" fill="{MUTED}" font-size="11">'
                     f"{escape(label)}</text>")
    for y, label in yticks:
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="{GRID}"/>'
                     f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}" font-size="11">'
                     f"{escape(label)}</text>")
    return parts


def _legend(arms: Sequence[str], x0: float) -> list[str]:
    return [f'<rect x="{x0 + j * 110}" y="6" width="12" height="12" rx="2" fill="{color(j)}"/>'
            f'<text x="{x0 + j * 110 + 17}" y="16" fill="{INK}">{escape(a)}</text>' for j, a in enumerate(arms)]


DET_DECADES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def det_chart(arms: Sequence[str], curves: Sequence[Sequence[tuple[float, float]]]) -> str:
    """DET curves (FRR against FAR, both on log axes from 0.01 % to 100 %): lower-left is better."""
    width, height, top, bottom, x0, x1 = WIDTH, 360, 30, 30, 60, WIDTH - 20
    lo = math.log10(DET_DECADES[0])

    def sx(v: float) -> float:
        return x0 + (x1 - x0) * (math.log10(max(v, DET_DECADES[0])) - lo) / -lo

    def sy(v: float) -> float:
        return height - bottom - (height - bottom - top) * (math.log10(max(v, DET_DECADES[0])) - lo) / -lo

    ticks = [(d, f"{d * 100:g} %") for d in DET_DECADES]
    parts = _frame(x0, x1, top, height - bottom, [(sx(d), t) for d, t in ticks], [(sy(d), t) for d, t in ticks])
    parts += _legend(arms, x0)
    parts.append(f'<text x="{x1}" y="{height - bottom - 6}" text-anchor="end" fill="{MUTED}" font-size="11">FAR</text>'
                 f'<text x="{x0 + 6}" y="{top + 12}" fill="{MUTED}" font-size="11">FRR</text>')
    for i, pts in enumerate(curves):
        if not pts:
            continue
        path = " ".join(f"{'M' if k == 0 else 'L'}{sx(far):.1f} {sy(frr):.1f}" for k, (far, frr) in enumerate(pts))
        parts.append(f'<path class="det-curve" d="{path}" fill="none" stroke="{color(i)}" stroke-width="2.5">'
                     f"<title>{escape(arms[i])}</title></path>")
    return _svg(width, height, parts, "DET curve per arm: FRR against FAR over all thresholds")


def histogram_chart(arm: str, genuine: Sequence[int], impostor: Sequence[int], max_distance: int,
                    threshold: float | None, index: int) -> str:
    """Genuine (arm colour) and impostor (grey) distance histograms of one arm, the threshold as a line."""
    width, height, top, bottom, x0, x1 = WIDTH, 200, 28, 30, 44, WIDTH - 20
    peak = max([*genuine, *impostor, 1])
    bins = max(len(genuine), len(impostor), 1)

    def sx(d: float) -> float:
        return x0 + (x1 - x0) * d / (max_distance + 1)

    def sy(v: float) -> float:
        return height - bottom - (height - bottom - top) * v / peak

    xt = [(sx(t), f"{t:g}") for t in _nice_ticks(0, max_distance)[:-1] if t <= max_distance]
    parts = _frame(x0, x1, top, height - bottom, xt, [(sy(peak), f"{peak}"), (sy(0), "0")])
    parts.append(f'<text x="{x0}" y="16" fill="{INK}" font-weight="600">{escape(arm)}</text>'
                 f'<rect x="{x0 + 120}" y="6" width="12" height="12" fill="{color(index)}"/>'
                 f'<text x="{x0 + 137}" y="16" fill="{INK}">genuine</text>'
                 f'<rect x="{x0 + 220}" y="6" width="12" height="12" fill="{MUTED}"/>'
                 f'<text x="{x0 + 237}" y="16" fill="{INK}">impostor</text>')
    bw = (x1 - x0) / bins
    for series, fill, cls, opacity in ((genuine, color(index), "genuine", 1.0), (impostor, MUTED, "impostor", 0.6)):
        for k, c in enumerate(series):
            if c > 0:
                parts.append(f'<rect class="hist-{cls}" x="{x0 + k * bw:.1f}" y="{sy(c):.1f}" '
                             f'width="{max(bw - 1, 1):.1f}" height="{sy(0) - sy(c):.1f}" fill="{fill}" '
                             f'opacity="{opacity}"><title>{cls}: {c}</title></rect>')
    if threshold is not None:
        x = sx(threshold + 0.5)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="{INK}" '
                     f'stroke-dasharray="4 3" stroke-width="2"><title>threshold {threshold:g}</title></line>')
    return _svg(width, height, parts, f"distance histograms of {arm}: genuine and impostor")


def sequential_chart(keys: Sequence[str], times: Sequence[str], pvalues: Sequence[Sequence[float]],
                     alpha: float) -> str:
    """Always-valid p-value of each comparison over the reads (log axis), alpha as a red line."""
    width, height, top, bottom, x0, x1 = WIDTH, 240, 30, 30, 60, WIDTH - 20
    floor = 1e-6

    def sy(p: float) -> float:
        return top + (height - bottom - top) * -math.log10(max(p, floor)) / 6

    n = max(len(times), 2)

    def sx(k: int) -> float:
        return x0 + (x1 - x0) * k / (n - 1)

    yt = [(sy(10.0 ** -e), f"1e-{e}" if e else "1") for e in range(0, 7, 2)]
    xt = [(sx(k), times[k]) for k in (0, len(times) // 2, len(times) - 1)] if times else []
    parts = _frame(x0, x1, top, height - bottom, xt, yt) + _legend(keys, x0)
    parts.append(f'<line x1="{x0}" y1="{sy(alpha):.1f}" x2="{x1}" y2="{sy(alpha):.1f}" stroke="#dc2626" '
                 f'stroke-width="2" stroke-dasharray="6 3"><title>alpha {alpha:g}</title></line>')
    for i, series in enumerate(pvalues):
        path = " ".join(f"{'M' if k == 0 else 'L'}{sx(k):.1f} {sy(p):.1f}" for k, p in enumerate(series))
        parts.append(f'<path class="seq-curve" d="{path}" fill="none" stroke="{color(i)}" stroke-width="2.5">'
                     f"<title>{escape(keys[i])}</title></path>")
    return _svg(width, height, parts, "always-valid p-value over time (mSPRT)")
