"""bench/stacks.py: every stack declared once, complete, and the reference among them."""

from __future__ import annotations

from pathlib import Path

from bench import stacks


def test_keys_are_unique_and_the_reference_exists():
    keys = [s.key for s in stacks.STACKS + stacks.TUNED]
    assert len(keys) == len(set(keys))
    assert stacks.REFERENCE in keys


def test_every_stack_says_what_it_runs(tmp_path):
    for stack in stacks.STACKS + stacks.TUNED:
        assert stack.label and stack.settings, stack.key
        assert set(stack.paths) <= set(stacks.PATHS), stack.key
        if stack.family == "greenpool":
            assert stack.bound == stacks.WORKERS * stacks.GREENPOOL_MAX_SIZE, stack.key
        if stack.needs_nginx:
            continue  # its commands render an nginx config
        commands = stack.commands(stacks.Ports(app=18000, front=18000), Path(tmp_path))
        assert commands and all(c.argv for c in commands), stack.key
        assert all("127.0.0.1:" in " ".join(c.argv) for c in commands), stack.key


def test_the_tuned_series_only_adds_ssl_disabled():
    for stack in stacks.TUNED:
        env = stack.commands(stacks.Ports(app=18000, front=18000), Path("/tmp"))[0].env
        assert env["GREENPOOL_BENCH_TUNED"] == "1", stack.key
