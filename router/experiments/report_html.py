"""The experiment page: one self-contained HTML document (inline CSS and SVG, no scripts, no CDN).

Read top to bottom it answers, in order: can I trust the split (SRM banner), is there a
difference (verdict), how big and how sure (accept rates with intervals), what does it cost
(latency), and how did traffic move (timeline).
"""

from __future__ import annotations

import time
from html import escape

from router.experiments.charts import (
    color,
    det_chart,
    histogram_chart,
    interval_chart,
    latency_chart,
    sequential_chart,
    split_chart,
    timeline_chart,
)
from router.experiments.error_rates import MAX_DISTANCE
from router.experiments.report import METRICS, ExperimentReport

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
    if not report.errors:
        out.append('<div class="banner info">Accept rate is not accuracy: no labelled outcomes in this window, so '
                   "the arms cannot be judged on FAR and FRR. Post outcomes to /v1/audit/{id}/outcome.</div>")
    judged = [c for c in report.comparisons if c.metric != "accept_rate"] or report.comparisons
    for c in judged:
        # A comparison over a broken split is not evidence either way: shown, but neutral. Higher
        # error rates are bad; for the accept rate alone no direction is good or bad.
        worse = c.difference is not None and c.difference > 0 and c.metric != "accept_rate"
        kind = "info" if srm.mismatch or not c.sequential_significant else ("warn" if worse else "ok")
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
            f'<div class="small">{a.requests:,} verifications by {a.subjects:,} subjects · {a.observed_share:.1f} % '
            f"(weight {a.configured_weight:.0f} %)</div><div class=\"small\">{escape(lat)}</div></div>")
    return f'<div class="cards">{"".join(cards)}</div>'


def _p(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _table(report: ExperimentReport) -> str:
    rows = []
    for c in report.comparisons:
        ci = (f"[{100 * c.difference_ci.low:+.2f}, {100 * c.difference_ci.high:+.2f}]"
              if c.difference_ci else "–")
        diff = "–" if c.difference is None else f"{100 * c.difference:+.2f}"
        rows.append(f"<tr><td>{escape(METRICS[c.metric])}: {escape(c.treatment)} vs {escape(c.control)}</td>"
                    f"<td>{diff}</td><td>{ci}</td><td>{c.subjects:,}</td><td>{_p(c.p_value)}</td>"
                    f"<td>{_p(c.sequential_p_value)}</td><td>{_p(c.request_p_value)}</td>"
                    f"<td>{'yes' if c.sequential_significant else 'no'}</td></tr>")
    srm = report.srm
    chi2 = "–" if srm.chi2 is None else f"{srm.chi2:.2f}"
    excluded = ", ".join(f"{n:,} {k}" for k, n in sorted(report.excluded.items())) or "none"
    return (
        '<div class="panel"><h2>Tests</h2><table><tr><th>comparison</th><th>difference (points)</th>'
        f"<th>{report.confidence * 100:g} % interval</th><th>subjects</th><th>fixed-horizon p</th>"
        "<th>always-valid p</th><th>request-level p</th><th>significant (always-valid)</th></tr>"
        f"{''.join(rows)}</table><p class=\"small\">Differences are of the mean per-subject rate (every subject "
        "weighs one), intervals cluster-robust over subjects. <b>Fixed-horizon p</b>: valid only when read once, "
        "at the planned end. <b>Always-valid p</b> (mSPRT): valid however often the report is read, as a canary "
        "reads it. <b>Request-level p</b>: treats requests as independent; too small with sticky subjects, "
        f"shown for contrast. Alpha {1 - report.confidence:.2g}. Sample ratio check over subjects first "
        f"assigned in the window, against the weights in force when each was assigned: chi-square {chi2} on "
        f"{srm.dof} degree(s) of freedom, p {_p(srm.p_value)} (alarm below 0.001). Not compared, counted "
        f"apart: {escape(excluded)}.</p></div>")


def _errors_panel(report: ExperimentReport) -> str:
    if not report.errors:
        return ""
    rows = []
    for e in report.errors:
        def ci(iv) -> str:
            return f"[{_pct(iv.low, 2)}, {_pct(iv.high, 2)}]" if iv else ""

        rows.append(f"<tr><td>{escape(e.arm)}</td><td>{e.genuine:,}</td><td>{_pct(e.frr, 2)} {ci(e.frr_ci)}</td>"
                    f"<td>{e.impostor:,}</td><td>{_pct(e.far, 2)} {ci(e.far_ci)}</td><td>{_pct(e.eer, 2)}</td>"
                    f"<td>{_pct(e.frr_at_far_1pct, 2)}</td></tr>")
    arms = [e.arm for e in report.errors]
    det = det_chart(arms, [e.det for e in report.errors])
    hists = "".join(histogram_chart(e.arm, e.genuine_hist, e.impostor_hist, MAX_DISTANCE, report.threshold, i)
                    for i, e in enumerate(report.errors))
    return (f'<div class="panel"><h2>Error rates at threshold {report.threshold:g} (labelled outcomes)</h2>'
            "<table><tr><th>arm</th><th>genuine</th><th>FRR</th><th>impostor</th><th>FAR</th><th>EER</th>"
            f"<th>FRR at FAR 1 %</th></tr>{''.join(rows)}</table><p class=\"small\">FRR: genuine attempts "
            "rejected; FAR: impostor attempts accepted. Intervals over subjects (Wilson at the effective sample "
            f"size), {report.confidence * 100:g} %.</p></div>"
            f'<div class="panel"><h2>DET curves</h2>{det}</div>'
            f'<div class="panel"><h2>Genuine and impostor distances</h2>{hists}</div>')


def _sequential_panel(report: ExperimentReport) -> str:
    if not report.sequential:
        return ""
    keys = list(report.sequential[0].p_values)
    if not keys:
        return ""
    times = [time.strftime("%H:%M:%S", time.gmtime(p.at)) for p in report.sequential]
    chart = sequential_chart(keys, times, [[p.p_values[k] for p in report.sequential] for k in keys],
                             1 - report.confidence)
    return f'<div class="panel"><h2>Always-valid p-value over time</h2>{chart}</div>'


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
<p class="sub">route <b>{escape(report.route)}</b> · {report.total:,} randomised verifications since
 {escape(_when(report.since))} · generated {escape(_when(report.generated_at))}</p>
{_banners(report)}
{_cards(report)}
{_errors_panel(report)}
{_sequential_panel(report)}
<div class="panel"><h2>Accept rate, {report.confidence * 100:g} % interval (over subjects)</h2>{rates}</div>
<div class="panel"><h2>Traffic split: observed share, configured weight (black tick)</h2>{split}</div>
<div class="panel"><h2>Latency per arm</h2>{latency}</div>
<div class="panel"><h2>Verifications over time</h2>{timeline}</div>
{_table(report)}
</main></body></html>
"""
