"""What a session reset at checkin costs per request.

Runs Django's request cycle (request_started, three primary-key reads,
request_finished) in one gevent-patched process, on greenpool pools with
reset_session False, "auto" and True, interleaved in rounds so machine noise
hits all alike. Prints µs per request and the ratios to False; appends JSON
lines to bench/results/reset_cost.jsonl.

    .venv/bin/python -m bench.reset_cost [--rounds 5] [--requests 2000]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import django  # noqa: E402
from django.conf import settings  # noqa: E402

DB = "greenpool_bench_reset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    env = os.environ
    base = {
        "ENGINE": "greenpool.backends.mysql",
        "NAME": DB,
        "USER": env.get("GREENPOOL_MYSQL_USER", "root"),
        "PASSWORD": env.get("GREENPOOL_MYSQL_PASSWORD", ""),
        "HOST": env.get("GREENPOOL_MYSQL_HOST", "127.0.0.1"),
        "PORT": env.get("GREENPOOL_MYSQL_PORT", "3306"),
        "CONN_HEALTH_CHECKS": True,
    }
    import pymysql

    admin = pymysql.connect(
        host=base["HOST"],
        port=int(base["PORT"]),
        user=base["USER"],
        password=base["PASSWORD"],
        autocommit=True,
        ssl_disabled=True,
    )
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {DB}.item (id INT PRIMARY KEY, name VARCHAR(50))")
        cur.execute(f"REPLACE INTO {DB}.item VALUES (1,'a'),(2,'b'),(3,'c')")
    settings.configure(
        DATABASES={
            "default": {**base, "OPTIONS": {"pool": {"max_size": 1}}},
            "reset_false": {**base, "OPTIONS": {"pool": {"max_size": 1, "reset_session": False}}},
            "reset_auto": {**base, "OPTIONS": {"pool": {"max_size": 1, "reset_session": "auto"}}},
            "reset_true": {**base, "OPTIONS": {"pool": {"max_size": 1, "reset_session": True}}},
        },
        INSTALLED_APPS=[],
    )
    django.setup()
    from django.core.signals import request_finished, request_started
    from django.db import connections

    def one_request(alias: str) -> None:
        request_started.send(sender=None)
        conn = connections[alias]
        with conn.cursor() as cur:
            for pk in (1, 2, 3):
                cur.execute("SELECT id, name FROM item WHERE id = %s", (pk,))
                cur.fetchone()
        request_finished.send(sender=None)

    results: dict[str, list[float]] = {"reset_false": [], "reset_auto": [], "reset_true": []}
    for alias in results:  # warm-up: connect, Django's server-data queries
        for _ in range(50):
            one_request(alias)
    for _ in range(args.rounds):
        for alias in results:
            started = time.perf_counter()
            for _ in range(args.requests):
                one_request(alias)
            results[alias].append((time.perf_counter() - started) / args.requests * 1e6)
    medians = {alias: statistics.median(values) for alias, values in results.items()}
    row = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "django": django.get_version(),
        "nproc": os.cpu_count(),
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        **{f"us_per_request_{alias}": round(m, 1) for alias, m in medians.items()},
        # Resets done by the "auto" pool's connection: 0 shows it never reset a
        # session the read path did not change.
        "resets_in_auto_mode": sum(r.conn.greenpool.resets for r in connections["reset_auto"].pool._idle),
        "ratio_auto_to_false": round(medians["reset_auto"] / medians["reset_false"], 3),
        "ratio_true_to_false": round(medians["reset_true"] / medians["reset_false"], 3),
    }
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/reset_cost.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    sys.exit(0)


if __name__ == "__main__":
    main()
