"""The experiment report over subjects: excluded kinds, SRM across canary steps, FAR/FRR from labels,
the sequential statistic over time."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from router.experiments.report import build_report
from router.experiments.rows import ExperimentRow


@dataclass(frozen=True)
class First:
    subject_id: str
    arm: str
    policy_version: int | None


def canary_rows(seed: int = 5, frr_v2: float = 0.05) -> tuple[list[ExperimentRow], list[First], dict]:
    """600 subjects arriving over 3 policy versions (v2 at 10, 30, 50 %), a few requests each, labelled."""
    rng = random.Random(seed)
    history = {1: {"v1": 90.0, "v2": 10.0}, 2: {"v1": 70.0, "v2": 30.0}, 3: {"v1": 50.0, "v2": 50.0}}
    rows, first = [], []
    t = 1000.0
    for s in range(600):
        version = 1 + s // 200
        bucket = rng.random()
        arm = "v2" if bucket < history[version]["v2"] / 100 else "v1"
        first.append(First(f"s{s}", arm, version))
        for _ in range(rng.randint(1, 4)):
            t += 1
            genuine = rng.random() < 0.7
            if genuine:
                distance = 30 if rng.random() < (frr_v2 if arm == "v2" else 0.05) else 8
            else:
                distance = 20 if rng.random() < 0.02 else 64
            decision = "accept" if distance <= 24 else "reject"
            rows.append(ExperimentRow(arm, decision, 5.0, t, f"s{s}", "randomised", version, distance, genuine,
                                      f"{len(rows):032x}"))
    rows.append(ExperimentRow("v2", "accept", 5.0, t + 1, "pinned-one", "pinned", 3, 3, True, "p" * 32))
    rows.append(ExperimentRow("v1", "reject", 5.0, t + 2, "s1", "fallback", 3, 60, True, "f" * 32))
    return rows, first, history


def test_excluded_rows_are_counted_apart_and_srm_follows_the_weight_history() -> None:
    rows, first, history = canary_rows()
    rep = build_report("face-v2", "face", rows, {"v1": 50, "v2": 50}, generated_at=1.0, first_assignments=first,
                       weight_history=history, threshold=24)
    assert rep.excluded == {"pinned": 1, "fallback": 1}
    assert rep.total == len(rows) - 2 == sum(a.requests for a in rep.arms)
    assert sum(a.subjects for a in rep.arms) == 600
    assert not rep.srm.mismatch and rep.srm.expected["v2"] == pytest.approx(200 * 0.1 + 200 * 0.3 + 200 * 0.5)
    # Against today's 50/50 only, the same subjects are a mismatch.
    today = build_report("face-v2", "face", rows, {"v1": 50, "v2": 50}, generated_at=1.0,
                         first_assignments=first, weight_history={})
    assert today.srm.mismatch and "not on record" in today.srm.summary


def test_far_frr_equal_a_recount_of_the_labelled_rows() -> None:
    rows, first, history = canary_rows()
    rep = build_report("face-v2", "face", rows, {"v1": 50, "v2": 50}, generated_at=1.0, first_assignments=first,
                       weight_history=history, threshold=24)
    for e in rep.errors:
        mine = [r for r in rows if r.arm == e.arm and r.kind == "randomised"]
        gen = [r for r in mine if r.genuine]
        imp = [r for r in mine if r.genuine is False]
        assert e.genuine == len(gen) and e.impostor == len(imp)
        assert e.frr == pytest.approx(sum(r.distance > 24 for r in gen) / len(gen))
        assert e.far == pytest.approx(sum(r.distance <= 24 for r in imp) / len(imp))
        assert e.frr_ci.low <= e.frr <= e.frr_ci.high and e.far_ci.low <= e.far <= e.far_ci.high
        assert e.det[0] == (0.0, 1.0) and e.det[-1] == (1.0, 0.0)
        assert sum(e.genuine_hist) == len(gen) and sum(e.impostor_hist) == len(imp)
        assert e.eer is not None and 0 <= e.eer <= 0.1
    metrics = [(c.metric, c.treatment) for c in rep.comparisons]
    assert metrics == [("accept_rate", "v2"), ("frr", "v2"), ("far", "v2")]
    assert len(rep.sequential) == 24 and set(rep.sequential[-1].p_values) == {"accept_rate:v2", "frr:v2", "far:v2"}
    ps = [p.p_values["frr:v2"] for p in rep.sequential]
    assert all(a >= b for a, b in zip(ps, ps[1:], strict=False))
    assert rep.comparisons[1].sequential_p_value == ps[-1]


def test_a_real_frr_difference_is_found_and_named() -> None:
    rows, first, history = canary_rows(seed=9, frr_v2=0.30)
    rep = build_report("face-v2", "face", rows, {"v1": 50, "v2": 50}, generated_at=1.0, first_assignments=first,
                       weight_history=history, threshold=24)
    frr = next(c for c in rep.comparisons if c.metric == "frr")
    assert frr.significant and frr.sequential_significant and frr.difference > 0.15
    assert "v2 FRR higher than v1" in frr.summary
    assert frr.request_p_value is not None and frr.request_p_value < frr.p_value  # requests overstate certainty


def test_without_labels_there_is_no_error_section() -> None:
    rows, first, history = canary_rows()
    unlabelled = [ExperimentRow(r.arm, r.decision, r.latency_ms, r.created_at, r.subject_id, r.kind,
                                r.policy_version, r.distance, None, r.audit_id) for r in rows]
    rep = build_report("face-v2", "face", unlabelled, {"v1": 50, "v2": 50}, generated_at=1.0, threshold=24)
    assert rep.errors == [] and [c.metric for c in rep.comparisons] == ["accept_rate"]
    assert "today's weights" in rep.srm.summary  # no first assignments given: the old check, labelled
