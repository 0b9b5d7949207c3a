"""The experiment page: one self-contained HTML document (inline CSS and SVG, no scripts, no CDN).

Read top to bottom it answers, in order: can I trust the split (SRM banner), is there a
difference (verdict), how big and how sure (accept rates with intervals), what does it cost
(latency), and how did traffic move (timeline).
"""

from __future__ import annotations

import time
from html import escape

from router.experiments.charts import color, interval_chart, latency_chart, split_chart, timeline_chart
from router.experiments.stats import ExperimentReport

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f3f4f6; color: #111827;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 28px 24px 48px; }
h1 { font-size: 26px; margin: 0 0 2px; }
h2 { font-size: 16px; margin: 0 0 10px; }
.sub { color: #6b7280; margin: 0 0 18px; }
.banner { border-radius: 10px; padding: 12px 16px; margin: 0 0 14px; font-weight: 600; }
.ok { background: #dcfce7; color: #14532d; border: 1px solid #86efac; }
.warn { background: #fee2e2; color: #7f1d1d; border: 1px solid #fca5a5; }
.info { background: #e0e7ff; color: #1e3a8a; border: 1px solid #a5b4fc; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 12px; margin: 0 0 14px; }
.card { background: white; border-radius: 10px; padding: 14px 16px; box-shadow: 0 1px 2px rgb(0 0 0 / 6%); }
.card .arm { font-weight: 700; font-size: 17px; display: flex; align-items: center; gap: 8px; }
.dot { width: 12px; height: 12px; border-radius: 3px; display: inline-block; }
.big { font-size: 28px; font-weight: 700; margin: 4px 0 0; }
.small { color: #6b7280; font-size: 13px; }
.panel { background: white; border-radius: 10px; padding: 16px; box-shadow: 0 1px 2px rgb(0 0 0 / 6%);
         margin: 0 0 12px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: right; padding: 6px 8px; border-bottom: 1px solid #e5e7eb; }
th:first-child, td:first-child { text-align: left; }
th { color: #6b7280; font-weight: 600; }
"""


def _pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def _when(ts: float | None) -> str:
    return "the start" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _banners(report: ExperimentReport) -> str:
    out = []
    srm = report.srm
    kind = "warn" if srm.mismatch else ("info" if srm.p_value is None else "ok")
    label = "Broken split" if srm.mismatch else "Traffic split"
    out.append(f'<div class="banner {kind}">{label}: {escape(srm.summary)}</div>')
    for c in report.comparisons:
        # A comparison over a broken split is not evidence either way: shown, but neutral.
        kind = "info" if srm.mismatch or not c.significant else ("warn" if c.difference < 0 else "ok")
        caveat = " (untrusted: sample ratio mismatch)" if srm.mismatch else ""
        out.append(f'<div class="banner {kind}">{escape(c.summary + caveat)}</div>')
    return "".join(out)


def _cards(report: ExperimentReport) -> str:
    cards = []
    for i, a in enumerate(report.arms):
        ci = f"[{_pct(a.accept_ci.low)}, {_pct(a.accept_ci.high)}]" if a.accept_ci else ""
        p50 = a.latency_ms.get("p50")
        p99 = a.latency_ms.get("p99")
        lat = f"p50 {p50:.1f} ms · p99 {p99:.1f} ms" if p50 is not None and p99 is not None else "no latency data"
        cards.append(
            f'<div class="card"><div class="arm"><span class="dot" style="background:{color(i)}"></span>'
            f'{escape(a.arm)}</div><div class="big">{_pct(a.accept_rate)}</div>'
            f'<div class="small">accept rate {escape(ci)}</div>'
            f'<div class="small">{a.requests:,} verifications · {a.observed_share:.1f} % of traffic '
            f"(weight {a.configured_weight:.0f} %)</div><div class=\"small\">{escape(lat)}</div></div>")
    return f'<div class="cards">{"".join(cards)}</div>'


def _table(report: ExperimentReport) -> str:
    rows = []
    for c in report.comparisons:
        ci = (f"[{100 * c.difference_ci.low:+.2f}, {100 * c.difference_ci.high:+.2f}]"
              if c.difference_ci else "–")
        z = "–" if c.z is None else f"{c.z:.2f}"
        p = "–" if c.p_value is None else f"{c.p_value:.3g}"
        rows.append(f"<tr><td>{escape(c.treatment)} vs {escape(c.control)}</td><td>{100 * c.difference:+.2f}</td>"
                    f"<td>{ci}</td><td>{z}</td><td>{p}</td><td>{'yes' if c.significant else 'no'}</td></tr>")
    srm = report.srm
    chi2 = "–" if srm.chi2 is None else f"{srm.chi2:.2f}"
    p = "–" if srm.p_value is None else f"{srm.p_value:.3g}"
    return (
        '<div class="panel"><h2>Tests</h2><table><tr><th>accept rate</th><th>difference (points)</th>'
        f"<th>{report.confidence * 100:g} % interval</th><th>z</th><th>p-value</th><th>significant</th></tr>"
        f"{''.join(rows)}</table><p class=\"small\">Two-proportion z-test (pooled), two-sided, "
        f"alpha {1 - report.confidence:.2g}. Sample ratio check: chi-square {chi2} on {srm.dof} degree(s) of "
        f"freedom, p {p} (alarm below 0.001). The split is compared with the weights in force now; "
        "restrict the window with <code>?since=</code> after a weight change.</p></div>")


def render_page(report: ExperimentReport) -> str:
    """The whole HTML page for one experiment report."""
    arms = [a.arm for a in report.arms]
    split = split_chart(arms, [a.observed_share for a in report.arms], [a.configured_weight for a in report.arms],
                        [a.requests for a in report.arms])
    rates = interval_chart(arms, [a.accept_rate for a in report.arms],
                           [a.accept_ci.low if a.accept_ci else None for a in report.arms],
                           [a.accept_ci.high if a.accept_ci else None for a in report.arms], report.confidence)
    latency = latency_chart(arms, [a.latency_ms for a in report.arms])
    labels = [time.strftime("%H:%M:%S", time.gmtime(b.start)) for b in report.timeline]
    timeline = timeline_chart(arms, [[b.counts.get(a, 0) for a in arms] for b in report.timeline], labels)
    title = f"Experiment {report.experiment}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · ServeStack</title><style>{_CSS}</style></head>
<body><main>
<h1>{escape(title)}</h1>
<p class="sub">route <b>{escape(report.route)}</b> · {report.total:,} verifications since {escape(_when(report.since))}
 · generated {escape(_when(report.generated_at))}</p>
{_banners(report)}
{_cards(report)}
<div class="panel"><h2>Accept rate, {report.confidence * 100:g} % Wilson interval</h2>{rates}</div>
<div class="panel"><h2>Traffic split: observed share, configured weight (black tick)</h2>{split}</div>
<div class="panel"><h2>Latency per arm</h2>{latency}</div>
<div class="panel"><h2>Verifications over time</h2>{timeline}</div>
{_table(report)}
</main></body></html>
"""
