"""The router's explanation endpoint when the explainer fails, and the facts it sends (fake pods)."""

from __future__ import annotations

import pytest

from llm_serving.schemas import Explanation
from llm_serving.sentences import check_complete
from router.explain import facts_of
from router.schemas import AuditRecord
from tests.router.support.fakes import AUTH, b64, running_router, standard_fakes, standard_policy
from tests.support.sse import sse_events


async def _verified(router, subject: str, **extra: object) -> dict:
    r = await router.client.post("/v1/enroll", headers=AUTH, json={"subject_id": subject, "face": b64(b"img")})
    assert r.status_code == 200, r.text
    r = await router.client.post("/v1/verify", headers=AUTH,
                                 json={"subject_id": subject, "face": b64(b"img"), **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("mode", ["error", "timeout"])
async def test_explainer_failure_answers_with_the_template_and_is_not_cached(tmp_path, mode: str):
    fakes = standard_fakes()
    fakes.explainer.mode = mode
    async with running_router(tmp_path, fakes, explainer_timeout_s=0.5) as router:
        rec = await _verified(router, "hal")
        url = f"/v1/audit/{rec['audit_id']}/explanation"
        first = await router.client.get(url, headers=AUTH)
        second = await router.client.get(url, headers=AUTH)
    assert first.status_code == second.status_code == 200
    body = first.json()
    assert body["source"] == "template" and body["reason"].startswith("explainer failed:")
    facts = facts_of(AuditRecord.model_validate(rec), default_threshold=24)
    assert check_complete(body["text"], facts) is None
    assert f"in {rec['modalities'][0]['distance']} of 128 bits" in body["text"]
    assert fakes.explainer.calls == 2  # the template is not cached: the next request asks the model again


async def test_stream_cut_short_keeps_the_checked_sentence_and_the_template_completes(tmp_path):
    fakes = standard_fakes()
    fakes.explainer.mode = "cut"
    async with running_router(tmp_path, fakes) as router:
        rec = await _verified(router, "ida")
        r = await router.client.get(f"/v1/audit/{rec['audit_id']}/explanation",
                                    headers={**AUTH, "Accept": "text/event-stream"})
    events = sse_events(r.text)
    assert r.status_code == 200 and events[-1][0] == "final" and [k for k, _ in events].count("final") == 1
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    final = Explanation.model_validate(events[-1][1])
    assert deltas[0].startswith("It was") and "".join(deltas) == final.text
    assert final.source == "template" and "without a final event" in (final.reason or "")
    assert (final.model_sentences, final.template_sentences) == (1, len(deltas) - 1)


async def test_no_reachable_explainer_is_503_with_retry_after(tmp_path):
    policy = standard_policy()
    policy.pop("explainer")
    async with running_router(tmp_path, standard_fakes(), policy=policy) as router:
        rec = await _verified(router, "jon")
        url = f"/v1/audit/{rec['audit_id']}/explanation"
        plain = await router.client.get(url, headers=AUTH)
        stream = await router.client.get(url, headers={**AUTH, "Accept": "text/event-stream"})
    for r in (plain, stream):
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error"]["code"] == "explainer_unavailable"


async def test_facts_carry_the_decision_kind(tmp_path):
    """Client threshold, canary arm, the missing modality; a record without modalities is a locked subject."""
    fakes = standard_fakes()
    async with running_router(tmp_path, fakes, policy=standard_policy(v1_weight=0, v2_weight=100)) as router:
        rec = await _verified(router, "kim", threshold=40)
        assert (await router.client.get(f"/v1/audit/{rec['audit_id']}/explanation", headers=AUTH)).status_code == 200
    (facts,) = fakes.explainer.records
    assert facts["threshold_source"] == "client" and facts["threshold"] == 40
    assert facts["missing_modalities"] == ["fingerprint"]
    assert [(m["modality"], m["arm"], m["canary"]) for m in facts["modalities"]] == [("face", "v2", True)]
    locked = AuditRecord.model_validate({**rec, "decision": "reject", "modalities": []})
    assert facts_of(locked).kind == "subject_locked" and facts_of(locked).modalities == []
    default = facts_of(AuditRecord.model_validate({**rec, "threshold": 24}), default_threshold=24)
    assert default.threshold_source == "default"
