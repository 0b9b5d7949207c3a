"""`servestack audit import-outcomes`: CSV parsing, and a real import against the in-process router."""

from __future__ import annotations

from servestack.audit_cmd import import_outcomes, parse_rows
from servestack.cli import build_parser
from tests.router.conftest import router  # noqa: F401 - the in-process router fixture
from tests.router.support.fakes import AUTH, CLIENT_KEY, b64


def test_parse_rows_accepts_the_usual_spellings_and_names_bad_lines() -> None:
    rows, bad = parse_rows(["audit_id,genuine", f"{'a' * 32},true", f"{'B' * 32},impostor", "xyz,true",
                            f"{'c' * 32},maybe", f"{'d' * 32},0"])
    assert rows == [(2, "a" * 32, True), (3, "b" * 32, False), (6, "d" * 32, False)]
    assert bad == ["line 4: audit_id 'xyz' is not 32 hex digits", "line 5: genuine 'maybe' is not true/false"]
    assert parse_rows(["id,label", "x,y"])[1][0].startswith("header must name audit_id and genuine")


def test_the_command_is_registered() -> None:
    args = build_parser().parse_args(["audit", "import-outcomes", "labels.csv", "--router-url", "http://x"])
    assert args.func.__name__ == "cmd_import" and str(args.csv) == "labels.csv"


async def test_import_stores_is_idempotent_and_reports_conflicts_and_unknown_ids(router) -> None:  # noqa: F811
    ids = []
    for i in range(3):
        image = b64(f"face-{i}".encode())
        assert (await router.client.post("/v1/enroll", json={"subject_id": f"s{i}", "face": image},
                                         headers=AUTH)).status_code == 200
        r = await router.client.post("/v1/verify", json={"subject_id": f"s{i}", "face": image}, headers=AUTH)
        ids.append(r.json()["audit_id"])
    rows = [(2, ids[0], True), (3, ids[1], False), (4, ids[2], True)]
    counts, problems = await import_outcomes(router.client, "http://router", CLIENT_KEY, rows)
    assert counts == {"stored": 3} and problems == []
    again, _ = await import_outcomes(router.client, "http://router", CLIENT_KEY, rows)
    assert again == {"unchanged": 3}
    counts, problems = await import_outcomes(router.client, "http://router", CLIENT_KEY,
                                             [(2, ids[0], False), (3, "f" * 32, True)])
    assert counts == {"conflict": 1, "not_found": 1}
    assert sorted(problems) == [f"line 2: {ids[0]}: HTTP 409 outcome_conflict",
                                f"line 3: {'f' * 32}: HTTP 404 not_found"]
    body = (await router.client.get("/v1/experiments/face-v2", headers=AUTH)).json()
    assert sum(e["genuine"] + e["impostor"] for e in body["errors"]) == 3
