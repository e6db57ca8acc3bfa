"""A smoke run: open a pool against MySQL, use it from 50 greenlets, print its stats.

Shipped for users: it checks an installation against their own server without Django.

    python -m greenpool.smoke

Reads GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE (defaults
127.0.0.1:3306, root, no password, database test).
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from greenpool import mysql  # noqa: E402
from greenpool.pool import Pool  # noqa: E402


def main() -> int:
    env = os.environ
    params = {
        "host": env.get("GREENPOOL_MYSQL_HOST", "127.0.0.1"),
        "port": int(env.get("GREENPOOL_MYSQL_PORT", "3306")),
        "user": env.get("GREENPOOL_MYSQL_USER", "root"),
        "password": env.get("GREENPOOL_MYSQL_PASSWORD", ""),
        "database": env.get("GREENPOOL_MYSQL_DATABASE", "test"),
        "autocommit": True,
        "connect_timeout": 5,
    }
    pool = Pool(
        mysql.connect_factory(params),
        min_size=2,
        max_size=5,
        timeout=10,
        name="smoke",
        check=mysql.check,
        reset=mysql.make_reset(False),
    )
    try:
        pool.open(wait=True, timeout=10)
    except Exception as exc:
        print(
            f"smoke: could not open a pool to {params['user']}@{params['host']}:{params['port']}: {exc}",
            file=sys.stderr,
        )
        return 1

    def work(i: int) -> None:
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT SLEEP(0.01), %s", (i,))
            assert cur.fetchone()[1] == i

    greenlets = [gevent.spawn(work, i) for i in range(50)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    print(repr(pool))
    print(json.dumps(pool.get_stats(), indent=2))
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
