"""bench/stacks.py: every stack declared once, complete, and the reference among them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import stacks

ROOT = Path(__file__).resolve().parent.parent


def test_keys_are_unique_and_the_reference_exists():
    keys = [s.key for s in stacks.STACKS + stacks.TUNED]
    assert len(keys) == len(set(keys))
    assert stacks.REFERENCE in keys


def test_every_stack_says_what_it_runs(tmp_path):
    for stack in stacks.STACKS + stacks.TUNED:
        assert stack.label and stack.settings, stack.key
        assert set(stack.paths) <= set(stacks.PATHS), stack.key
        if stack.family == "greenpool":
            expected = stacks.SLOW_POOL_SIZE if stack.key == "gp-gevent-pool20" else stacks.GREENPOOL_MAX_SIZE
            assert stack.bound == stack.workers * expected, stack.key
        if stack.needs_nginx:
            continue  # its commands render an nginx config
        commands = stack.commands(stacks.Ports(app=18000, front=18000), Path(tmp_path))
        assert commands and all(c.argv for c in commands), stack.key
        assert all("127.0.0.1:" in " ".join(c.argv) for c in commands), stack.key


def test_the_tuned_series_only_adds_ssl_disabled(tmp_path):
    ports = stacks.Ports(app=18000, front=18000)
    for stack in stacks.TUNED:
        twin = stacks.ALL[stack.key.replace("+tuned", "")]
        mine, theirs = stack.commands(ports, tmp_path)[0], twin.commands(ports, tmp_path)[0]
        assert mine.argv == theirs.argv, stack.key
        assert mine.env == {**theirs.env, "GREENPOOL_BENCH_TUNED": "1"}, stack.key
        assert theirs.env.get("GREENPOOL_BENCH_TUNED") != "1", twin.key
    # What the flag does: bench.django_settings adds OPTIONS ssl_disabled and nothing else.
    show = (
        "import json; from bench import django_settings as s; "
        "print(json.dumps(s.DATABASES['default']['OPTIONS'], sort_keys=True, default=str))"
    )
    options = {}
    for tuned in ("1", ""):
        env = {**os.environ, "GREENPOOL_BENCH_BACKEND": "django", "GREENPOOL_BENCH_TUNED": tuned}
        out = subprocess.run(
            [sys.executable, "-c", show], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr[-2000:]
        options[tuned] = json.loads(out.stdout)
    assert options["1"] == {**options[""], "ssl_disabled": True}


def test_round_stacks_exist_and_the_read_cells_repeat_for_them_only():
    from bench import run

    keys = {s.key for s in stacks.STACKS + stacks.TUNED}
    assert set(stacks.ROUND_STACKS) <= keys
    chosen = [stacks.ALL[k] for k in ("gp-gevent", "sync-persist", "sync-cma0")]
    plan = {"paths": ("/hello", "/read"), "concurrency": (10,), "rounds": 3, "round_paths": ("/read",)}
    planned = run.cells(chosen, plan)
    read = [(order, rnd) for path, _c, order, rnd in planned if path == "/read"]
    assert [rnd for _o, rnd in read] == [0, 1, 2]
    assert {s.key for s in read[0][0]} == {"gp-gevent", "sync-persist", "sync-cma0"}
    for order, _rnd in read[1:]:
        assert {s.key for s in order} == {"gp-gevent", "sync-persist"}  # sync-cma0 is not a round stack
    assert [s.key for s in read[1][0]] != [s.key for s in read[2][0]]  # each round in another order
    assert [rnd for path, _c, _o, rnd in planned if path == "/hello"] == [0]


def test_greenpool_stacks_run_a_fixed_size_pool():
    for stack in stacks.STACKS:
        if stack.family == "greenpool" and not stack.needs_nginx:
            env = stack.commands(stacks.Ports(app=18000, front=18000), Path("/tmp"))[0].env
            assert env["GREENPOOL_DEMO_POOL_MIN_SIZE"] == env["GREENPOOL_DEMO_POOL_MAX_SIZE"], stack.key
            # the bound the report checks is the pool the stack really runs
            assert stack.bound == stack.workers * int(env["GREENPOOL_DEMO_POOL_MAX_SIZE"]), stack.key


def test_a_stacks_worker_count_is_what_its_command_starts(tmp_path):
    for stack in stacks.STACKS + (stacks.gunicorn_sync_with(7),):
        if stack.family not in ("greenpool", "gunicorn") or stack.needs_nginx:
            continue
        argv = stack.commands(stacks.Ports(app=18000, front=18000), Path(tmp_path))[0].argv
        assert argv[argv.index("-w") + 1] == str(stack.workers), stack.key
    assert stacks.ALL["gp-gevent-w1"].workers == stacks.ALL["sync-persist-w1"].workers == 1


def test_every_stack_on_greenpools_engine_promises_the_bound_of_the_pool_it_runs(tmp_path):
    on_greenpool = 0
    for stack in stacks.STACKS:
        if stack.needs_nginx:
            continue
        env = stack.commands(stacks.Ports(app=18000, front=18000), Path(tmp_path))[0].env
        if env.get("GREENPOOL_BENCH_BACKEND") != "greenpool":
            assert stack.bound is None, stack.key  # no pool, no promise
            continue
        on_greenpool += 1
        assert env["GREENPOOL_DEMO_POOL_MIN_SIZE"] == env["GREENPOOL_DEMO_POOL_MAX_SIZE"], stack.key
        assert stack.bound == stack.workers * int(env["GREENPOOL_DEMO_POOL_MAX_SIZE"]), stack.key
    # greenpool-serve's, gunicorn -k gevent's and uWSGI's rows with the ENGINE swap
    assert {"gevent-greenpool", "uwsgi-gevent-greenpool"} <= {s.key for s in stacks.STACKS if s.bound}
    assert on_greenpool >= 7


def test_the_uwsgi_stack_patches_before_django_and_forks_two_gevent_workers(tmp_path):
    stack = stacks.ALL["uwsgi-gevent-greenpool"]
    (command,) = stack.commands(stacks.Ports(app=18000, front=18000), Path(tmp_path))
    argv = command.argv
    assert argv[0].endswith("/uwsgi") and argv[argv.index("--http-socket") + 1] == "127.0.0.1:18000"
    assert argv[argv.index("--processes") + 1] == str(stack.workers) and "--master" in argv
    # The late flag makes greenpool refuse every request (greenpool/_patchcheck.py).
    assert "--gevent-early-monkey-patch" in argv and "--gevent-monkey-patch" not in argv
    assert int(argv[argv.index("--gevent") + 1]) >= 500  # the largest client count of a run fits in one worker
    assert command.stop_signal == "INT"  # uWSGI 2.0 reloads on TERM
    assert stack.key in stacks.ROUND_STACKS and "gevent-greenpool" in stacks.ROUND_STACKS
