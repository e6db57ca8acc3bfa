"""bench/ab.py's verdict arithmetic: medians over rounds, and the per-round
ratio to the first stack with its spread (the run itself is bench.run's measure)."""

from bench.ab import summarize


def _rec(stack, rnd, rps, p99, cpu, timeouts=0):
    return {
        "stack": stack,
        "round": rnd,
        "wrk": {"rps": rps, "p99_ms": p99, "timeouts": timeouts},
        "cpu": {"stack_us_per_request": cpu},
    }


def test_ratios_are_taken_round_by_round_against_the_first_stack():
    records = [
        _rec("a", 0, 100, 10, 1000),
        _rec("b", 0, 90, 20, 1100),
        _rec("b", 1, 120, 30, 900),
        _rec("a", 1, 200, 10, 1000),
        _rec("a", 2, 100, 10, 1000),
        _rec("b", 2, 110, 5, 1000),
    ]
    summary = summarize(records, ["a", "b"])
    rps = summary["b"]["req/s"]
    # per round: 0.9, 0.6, 1.1 -- not the ratio of the medians (110 / 100 = 1.1)
    assert rps["rounds"] == [90, 120, 110] and rps["median"] == 110
    assert (rps["ratio_median"], rps["ratio_min"], rps["ratio_max"]) == (0.9, 0.6, 1.1)
    assert summary["b"]["p99 ms"]["ratio_median"] == 2.0
    assert summary["a"]["req/s"]["ratio_median"] == 1.0


def test_a_round_missing_a_figure_is_left_out_not_counted_as_zero():
    records = [
        _rec("a", 0, 100, 10, 1000),
        {"stack": "b", "round": 0, "failed": "did not start"},
        _rec("a", 1, 100, 10, 1000),
        _rec("b", 1, 50, 10, 1000),
    ]
    rps = summarize(records, ["a", "b"])["b"]["req/s"]
    assert rps["rounds"] == [50] and rps["ratio_median"] == 0.5
