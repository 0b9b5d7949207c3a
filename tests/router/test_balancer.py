"""Power of two choices, outlier ejection with timed re-admission, retry budget (fake clock)."""

from __future__ import annotations

import random

from router.balancer import Balancer, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, ejected: list[str] | None = None) -> Balancer:
    return Balancer(consecutive_failures=3, base_ejection_s=5, max_ejection_s=12,
                    budget_factory=lambda: RetryBudget(0.2, 1, 10, clock), clock=clock,
                    on_eject=(ejected.append if ejected is not None else None), rng=random.Random(1))


def test_p2c_prefers_the_less_loaded_and_respects_exclude():
    b = make(Clock())
    b.set_endpoints("be", ["http://a", "http://b", "http://c"])
    pool = b.pool("be")
    pool.endpoints["http://a"].inflight = 10
    pool.endpoints["http://b"].inflight = 10
    picks = [b.pick("be").url for _ in range(300)]
    # c is picked whenever it is one of the two sampled (2/3 of the time), never beaten.
    assert 170 < picks.count("http://c") < 230
    assert b.pick("be", exclude={"http://a", "http://c"}).url == "http://b"
    assert b.pick("be", exclude={"http://a", "http://b", "http://c"}) is None
    assert b.pick("missing") is None


def test_ejection_after_consecutive_failures_and_timed_readmission():
    clock, ejected = Clock(), []
    b = make(clock, ejected)
    b.set_endpoints("be", ["http://a"])
    ep = b.pool("be").endpoints["http://a"]
    assert not b.report_failure("be", ep) and not b.report_failure("be", ep)
    b.report_success("be", ep)  # a success resets the streak
    assert not b.report_failure("be", ep) and not b.report_failure("be", ep)
    assert b.report_failure("be", ep) and ejected == ["be"]
    assert b.pick("be") is None and "ejected" in b.describe("be")
    clock.now += 4.9
    assert b.pick("be") is None
    clock.now += 0.2
    assert b.pick("be") is ep  # re-admitted by time
    for _ in range(3):
        b.report_failure("be", ep)
    assert ep.ejected_until - clock.now == 10  # second ejection in a row doubles
    clock.now += 10.1
    for _ in range(3):
        b.report_failure("be", ep)
    assert ep.ejected_until - clock.now == 12  # capped at max_ejection_s


def test_failed_health_check_removes_a_replica_until_it_passes():
    b = make(Clock())
    b.set_endpoints("be", ["http://a", "http://b"])
    b.pool("be").endpoints["http://a"].healthy = False
    assert {b.pick("be").url for _ in range(20)} == {"http://b"}
    b.pool("be").endpoints["http://a"].healthy = True
    assert {b.pick("be").url for _ in range(50)} == {"http://a", "http://b"}


def test_endpoint_state_survives_a_url_set_change():
    b = make(Clock())
    b.set_endpoints("be", ["http://a", "http://b"])
    b.pool("be").endpoints["http://a"].consecutive_failures = 2
    b.set_endpoints("be", ["http://a/", "http://c"])
    assert set(b.pool("be").endpoints) == {"http://a", "http://c"}
    assert b.pool("be").endpoints["http://a"].consecutive_failures == 2


def test_retry_budget_ratio_floor_and_window():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_s=0.1, window_s=10, clock=clock)
    assert budget.try_spend() and not budget.try_spend()  # floor: 0.1/s * 10 s = 1 retry
    for _ in range(20):
        budget.on_request()
    spent = sum(budget.try_spend() for _ in range(10))
    assert spent == 4  # 1 + 0.2 * 20 = 5 allowed in all, 1 already used
    clock.now += 11  # the window slides past everything
    assert budget.try_spend() and not budget.try_spend()
