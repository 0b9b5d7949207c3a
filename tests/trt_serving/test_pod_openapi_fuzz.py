"""Schemathesis against a real pod process: POST /v1/hash behaves as its OpenAPI schema says.

Every phase (examples, coverage, fuzzing, stateful) and every check, bounded to 12 cases per
operation; zero failures. One tuning, because JSON Schema cannot say "is an image": a request the
schema allows may still be refused with the documented 400 when its base64 text is not an image.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.openapi_fuzz import assert_clean, fuzz

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = """
[[operations]]
include-path = "/v1/hash"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]
"""


def test_hash_matches_its_openapi_schema(fingerprint_pod: tuple[str, str], tmp_path: Path) -> None:
    run = fuzz(fingerprint_pod[0], tmp_path, include_paths=("/v1/hash",), config=CONFIG, max_examples=12)
    assert_clean(run, operations=1)
    # The schema's own example is a real image: the examples phase got a 200 from the engine.
    assert run.report["phases"]["examples"]["status"] == "success", run.summary()
