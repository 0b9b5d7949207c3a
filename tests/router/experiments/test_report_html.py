"""The experiment page: self-contained (nothing fetched), escaped, and rendered by a real browser.

With Debian's chromium installed the page is screenshotted headless; the PNG is kept under the
test's tmp dir (path printed) for a person to look at. Checked here: the browser renders it
without a network and the image is not blank.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from router.experiments.report import build_report
from router.experiments.report_html import render_page
from router.experiments.rows import ExperimentRow


def sample_report(skew: float = 0.1, arms=("v1", "v2"), labelled: bool = True):
    rng = random.Random(7)
    rows = []
    for i in range(3000):
        arm = arms[1] if rng.random() < skew else arms[0]
        accept = rng.random() < (0.81 if arm == arms[0] else 0.88)
        genuine = (rng.random() < 0.8) if labelled else None
        distance = (rng.randint(0, 30) if genuine else rng.randint(18, 90)) if labelled else (10 if accept else 40)
        rows.append(ExperimentRow(arm, "accept" if accept else "reject", rng.lognormvariate(3.3, 0.35),
                                  1_700_000_000 + i, f"s{i % 700}", "randomised", 1, distance, genuine))
    first = list({r.subject_id: r for r in reversed(rows)}.values())  # each subject's first row
    return build_report("face-v2", "face", rows, {arms[0]: 90, arms[1]: 10}, generated_at=1_700_004_000,
                        threshold=24, first_assignments=first, weight_history={1: {arms[0]: 90, arms[1]: 10}})


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_page_is_self_contained_and_says_what_matters() -> None:
    page = render_page(sample_report())
    parser = _Collect()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    # accept rates, split, latency, timeline + DET, one histogram per arm, sequential p-value over time
    assert tags.count("svg") == 4 + 1 + 2 + 1 and "script" not in tags
    classes = [a.get("class") for _t, a in parser.tags]
    assert classes.count("det-curve") == 2 and classes.count("seq-curve") == 3  # accept rate, FRR, FAR
    assert classes.count("hist-genuine") > 5 and classes.count("hist-impostor") > 5
    assert "DET curves" in page and "Always-valid p-value over time" in page and "FRR at FAR 1 %" in page
    unlabelled = render_page(sample_report(labelled=False))
    assert "Accept rate is not accuracy" in unlabelled and "det-curve" not in unlabelled
    assert not [a for _t, a in parser.tags if a.get("src") or a.get("href")]  # nothing to fetch
    assert "http" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page)
    assert "Traffic split: 700 newly assigned subjects: v1" in page and "significant" in page
    skewed = render_page(sample_report(skew=0.3))
    assert "Broken split: sample ratio mismatch" in skewed and "untrusted" in skewed


def test_arm_names_are_escaped() -> None:
    page = render_page(sample_report(arms=("v1", "<b>x</b>")))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_text(render_page(sample_report(skew=0.3)))
    png = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1700", f"--screenshot={png}"]
    out = subprocess.run(["chromium", *flags, html.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    assert png.exists(), out.stderr[-2000:]
    print(f"screenshot: {png}")
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[:2] == (1700, 1100)
    # Not blank: the arm colours of the charts are on the page (blue v1, orange v2) and the red banner.
    def share(rgb: tuple[int, int, int]) -> float:
        return float((np.abs(img - np.array(rgb)).sum(axis=2) < 30).mean())

    assert share((0x25, 0x63, 0xEB)) > 0.005  # v1 blue
    assert share((0xEA, 0x58, 0x0C)) > 0.001  # v2 orange
    assert share((0xFE, 0xE2, 0xE2)) > 0.002  # SRM warning banner background
    # The browser's own DOM after parsing: the DET curves, histograms and the sequential chart are there.
    dom = subprocess.run(["chromium", *flags[:-1], "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120, check=False).stdout
    parser = _Collect()
    parser.feed(dom)
    classes = [a.get("class") for _t, a in parser.tags]
    assert [t for t, _ in parser.tags].count("svg") == 8
    assert classes.count("det-curve") == 2 and classes.count("seq-curve") == 3
    assert classes.count("hist-genuine") > 5 and classes.count("hist-impostor") > 5
