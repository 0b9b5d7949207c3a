"""Stable N-arm assignment: a subject moves only from an arm that lost weight to one that gained it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.assignment import BUCKETS, Allocation, ideal_counts, rebalance


def owners(alloc: Allocation) -> list[str]:
    return [alloc.arm_of(b) for b in range(alloc.buckets)]


def test_three_arms_move_a_to_c_moves_nobody_through_b() -> None:
    """Regression (issue 16): 80/10/10 -> 60/10/30 moved ~10 % of subjects a -> b and b -> c."""
    old_w = {"a": 80, "b": 10, "c": 10}
    new_w = {"a": 60, "b": 10, "c": 30}
    before = Allocation.from_weights(old_w)
    after = rebalance(before, new_w, old_w)
    moves: dict[tuple[str, str], int] = {}
    for x, y in zip(owners(before), owners(after), strict=True):
        if x != y:
            moves[(x, y)] = moves.get((x, y), 0) + 1
    assert moves == {("a", "c"): 2000}
    assert after.counts() == {"a": 6000, "b": 1000, "c": 3000}


def test_from_weights_is_contiguous_in_arm_order() -> None:
    alloc = Allocation.from_weights({"v1": 90, "v2": 10})
    assert alloc.to_spec() == {"v1": [[0, 9000]], "v2": [[9000, 10000]]}
    assert alloc.arm_of(8999) == "v1" and alloc.arm_of(9000) == "v2"


def test_spec_round_trip_and_validation() -> None:
    alloc = rebalance(Allocation.from_weights({"a": 1, "b": 1, "c": 1}), {"a": 1, "b": 0, "c": 2})
    assert Allocation.from_spec(alloc.to_spec()) == alloc
    with pytest.raises(ValueError, match="tile"):
        Allocation.from_spec({"a": [[0, 5000]], "b": [[4000, 10000]]})
    with pytest.raises(ValueError, match="cover"):
        Allocation.from_spec({"a": [[0, 5000]], "b": [[5000, 9000]]})
    with pytest.raises(ValueError, match="positive"):
        Allocation.from_weights({"a": 0, "b": 0})


def test_added_and_removed_arms() -> None:
    old_w = {"a": 50, "b": 50}
    before = Allocation.from_weights(old_w)
    after = rebalance(before, {"a": 50, "c": 50}, old_w)  # b removed, c added with b's share
    assert after.counts() == {"a": 5000, "c": 5000}
    assert after.ranges["a"] == before.ranges["a"]
    assert after.ranges["c"] == before.ranges["b"]


def test_hand_edited_weights_without_old_weights_still_move_only_losers_to_gainers() -> None:
    before = Allocation.from_weights({"a": 70, "b": 20, "c": 10})
    after = rebalance(before, {"a": 70, "b": 5, "c": 25})
    assert after.ranges["a"] == before.ranges["a"]
    assert after.counts() == {"a": 7000, "b": 500, "c": 2500}
    assert after.matches({"a": 70, "b": 5, "c": 25}) and not before.matches({"a": 70, "b": 5, "c": 25})


@settings(max_examples=150, deadline=None)
@given(st.integers(3, 6).flatmap(
    lambda k: st.lists(st.lists(st.integers(0, 100), min_size=k, max_size=k).filter(lambda ws: sum(ws) > 0),
                       min_size=2, max_size=8)))
def test_subjects_move_only_from_losers_to_gainers(sequence: list[list[int]]) -> None:
    """Property over 3-6 arms and random weight sequences (some steps repeat, some zero an arm)."""
    arms = [f"arm{i}" for i in range(len(sequence[0]))]
    weights = [dict(zip(arms, ws, strict=True)) for ws in sequence]
    alloc = Allocation.from_weights(weights[0])
    for old_w, new_w in zip(weights, weights[1:], strict=False):
        new = rebalance(alloc, new_w, old_w)
        old_share, new_share = ideal_counts(old_w), ideal_counts(new_w)
        before, after = owners(alloc), owners(new)
        for x, y in {(x, y) for x, y in zip(before, after, strict=True) if x != y}:
            assert new_share[x] < old_share[x], f"{x} lost subjects without losing weight"
            assert new_share[y] > old_share[y], f"{y} gained subjects without gaining weight"
        counts = new.counts()
        for a in arms:
            assert abs(counts[a] - new_share[a]) <= 1.0, (a, counts[a], new_share[a])
            if abs(new_share[a] - old_share[a]) < 1e-6:
                assert new.ranges[a] == alloc.ranges[a] or counts[a] == 0
        moved = sum(x != y for x, y in zip(before, after, strict=True))
        assert moved == sum(max(alloc.counts()[a] - counts[a], 0) for a in arms)  # no more moves than needed
        alloc = new
    assert sum(alloc.counts().values()) == BUCKETS


# --- in the policy ----------------------------------------------------------------------------

def three_arm_policy(a: float, b: float, c: float) -> dict:
    return {"backends": {f"b{x}": {"endpoints": [f"http://127.0.0.1:81{i}0"]} for i, x in enumerate("abc")},
            "routes": {"face": {"arms": [{"name": x, "backend": f"b{x}", "weight": w}
                                         for x, w in zip("abc", (a, b, c), strict=True)]}}}


def arms_of(policy, subjects: int = 5000) -> list[str]:
    from router.policy import RequestContext

    return [policy.choose(RequestContext(route="face", sticky_value=f"s{i}")).name for i in range(subjects)]


def test_policy_weight_moves_and_replacement_keep_subjects_put() -> None:
    from router.policy import PolicySpec, TrafficPolicy

    spec = PolicySpec.model_validate(three_arm_policy(80, 10, 10))
    before = arms_of(TrafficPolicy(spec))
    moved = spec.with_weights("face", {"a": 60, "c": 30})
    assert moved.routes["face"].allocation is not None  # persisted with the policy
    after = arms_of(TrafficPolicy(moved))
    assert {(x, y) for x, y in zip(before, after, strict=True) if x != y} == {("a", "c")}
    # A whole policy put without an allocation keeps the old one, moved to its weights.
    replaced = PolicySpec.model_validate(three_arm_policy(60, 20, 20)).with_allocations_from(moved)
    again = arms_of(TrafficPolicy(replaced))
    assert {(x, y) for x, y in zip(after, again, strict=True) if x != y} == {("c", "b")}  # 60/10/30 -> 60/20/20
    # Hand-edited weights beside a stale allocation: rebalanced from it, still only losers -> gainers.
    data = moved.model_dump(mode="json", exclude_none=True)
    data["routes"]["face"]["arms"][1]["weight"] = 0
    data["routes"]["face"]["arms"][2]["weight"] = 40
    edited = arms_of(TrafficPolicy(PolicySpec.model_validate(data)))
    assert {(x, y) for x, y in zip(after, edited, strict=True) if x != y} == {("b", "c")}


def test_policy_refuses_a_broken_allocation() -> None:
    from pydantic import ValidationError

    from router.policy import PolicySpec

    data = three_arm_policy(1, 1, 1)
    data["routes"]["face"]["allocation"] = {"a": [[0, 5000]], "b": [[5000, 9000]]}
    with pytest.raises(ValidationError, match="cover"):
        PolicySpec.model_validate(data)
