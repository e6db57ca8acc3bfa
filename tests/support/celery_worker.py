"""Real Celery workers (and beat) running tests/celeryproj, for tests/test_celery.py
and bench/celery_tasks.py, plus what both read from the server afterwards.

    with redis_server.redis_url() as broker, project_database(db) as name:
        with CeleryWorker(broker, db, name, pool="prefork", concurrency=2, workdir=tmp) as worker:
            results = worker.run("celeryproj.reads", [[[1, 2, 3]]] * 100)

Every worker gets a queue of its own, so workers of concurrent runs sharing one
Redis never take each other's tasks. Connections are counted on the server:
each task returns CONNECTION_ID(); ``server_sessions`` reads PROCESSLIST.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support import mysqlenv
from tests.support.procs import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.celeryproj.app"
POOLS = ("prefork", "gevent", "eventlet", "threads", "solo")
ITEMS = 100  # rows in greenpool_celery_item, ids 1..ITEMS

_READY_TIMEOUT = 60.0  # a prefork worker imports Django and forks its children
_STOP_GRACE = 20.0  # warm shutdown: running tasks finish first


def eventlet_installed() -> bool:
    # Looked up, not imported: importing eventlet warns and may patch.
    return importlib.util.find_spec("eventlet") is not None


# ---------------------------------------------------------------- the database


@contextmanager
def project_database(db: dict[str, Any], name: str | None = None) -> Iterator[str]:
    """Create a database of its own for the tasks (tables and rows), yield its
    name, drop it at the end. Its name is how PROCESSLIST tells the workers'
    sessions from everyone else's on a shared server."""
    name = name or f"greenpool_celery_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = mysqlenv.connect(db)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(
                f"CREATE TABLE `{name}`.greenpool_celery_item (id INT PRIMARY KEY, hits INT NOT NULL DEFAULT 0)"
                " ENGINE=InnoDB"
            )
            cur.execute(
                f"CREATE TABLE `{name}`.greenpool_celery_tick (id INT AUTO_INCREMENT PRIMARY KEY,"
                " conn BIGINT NOT NULL, pid INT NOT NULL) ENGINE=InnoDB"
            )
            cur.execute(
                f"INSERT INTO `{name}`.greenpool_celery_item (id) VALUES "
                + ", ".join(f"({i})" for i in range(1, ITEMS + 1))
            )
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def query(db: dict[str, Any], sql: str, args: Any = None) -> list[tuple]:
    """One admin query on a fresh connection (which has no default database,
    so it never counts among a project database's sessions)."""
    conn = mysqlenv.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def server_sessions(db: dict[str, Any], name: str) -> set[int]:
    """The ids of the server sessions whose default database is ``name``."""
    return {row[0] for row in query(db, "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", [name])}


def open_transactions(db: dict[str, Any], name: str) -> list[tuple]:
    """(session id, transaction state) of every open InnoDB transaction in a
    session of database ``name``."""
    return query(
        db,
        "SELECT p.ID, t.trx_state FROM information_schema.INNODB_TRX t"
        " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE p.DB = %s",
        [name],
    )


def wait_until(what: str, probe: Any, timeout: float, interval: float = 0.2) -> Any:
    """Call ``probe()`` until it returns something true; raise TimeoutError
    naming ``what`` and the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {value!r})")
        time.sleep(interval)


# ---------------------------------------------------------------- processes


def project_env(broker: str, db: dict[str, Any], database: str, queue: str, **settings: str) -> dict[str, str]:
    """The environment of a celeryproj process: ours less any Django or
    celeryproj settings, plus the server, broker, queue and ``settings``
    (GREENPOOL_CELERYPROJ_<NAME>, e.g. backend="django", conn_max_age="none")."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GREENPOOL_CELERYPROJ_", "GREENPOOL_MYSQL_")) and k != "DJANGO_SETTINGS_MODULE"
    }
    env.update(
        {
            "GREENPOOL_MYSQL_HOST": str(db["host"]),
            "GREENPOOL_MYSQL_PORT": str(db["port"]),
            "GREENPOOL_MYSQL_USER": str(db["user"]),
            "GREENPOOL_MYSQL_PASSWORD": str(db["password"]),
            "GREENPOOL_CELERYPROJ_DB": database,
            "GREENPOOL_CELERYPROJ_BROKER": broker,
            "GREENPOOL_CELERYPROJ_QUEUE": queue,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        }
    )
    env.update({f"GREENPOOL_CELERYPROJ_{key.upper()}": value for key, value in settings.items()})
    return env


def client(broker: str) -> Any:
    """A Celery app that only sends tasks (by name) and reads their results:
    no Django in the test process."""
    from celery import Celery

    return Celery("greenpool-celery-client", broker=broker, backend=broker, set_as_current=False)


def forget_queue(broker: str, queue: str) -> None:
    """Remove what kombu keeps in Redis for a queue (its binding sets, the
    list), so runs on a shared Redis leave nothing behind; results expire."""
    import redis

    with redis.Redis.from_url(broker, socket_timeout=5) as conn:
        conn.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


class CeleryWorker:
    """``celery -A tests.celeryproj.app worker -P POOL -c N`` on a queue of its own."""

    def __init__(
        self,
        broker: str,
        db: dict[str, Any],
        database: str,
        *,
        pool: str,
        concurrency: int,
        workdir: Path,
        args: tuple[str, ...] = (),
        **settings: str,
    ) -> None:
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.concurrency = concurrency
        self.tag = uuid.uuid4().hex[:8]
        self.queue = f"greenpool-celery-{self.tag}"
        self.log_path = Path(workdir) / f"celery-{pool}-{self.tag}.log"
        self.env = project_env(broker, db, database, self.queue, **settings)
        self.cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            APP,
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            self.queue,
            "-n",
            f"gp-{self.tag}@%h",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *args,
        ]
        self.broker = broker
        self.client = client(broker)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> CeleryWorker:
        self.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Ready when it has run a task: the broker link, the pool and Django are up.
        try:
            self.run("celeryproj.echo", [[0]], timeout=_READY_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: running tasks finish, children exit), then
        SIGKILL to the process group if it overstays."""
        if self.proc is not None:
            stop_process_group(self.proc, signal.SIGTERM, grace=_STOP_GRACE)
            forget_queue(self.broker, self.queue)
            self.client.close()

    def send(self, name: str, args: list, **options: Any) -> Any:
        return self.client.send_task(name, args=args, queue=self.queue, **options)

    def run(self, name: str, arglists: list[list], timeout: float = 60.0, **options: Any) -> list[Any]:
        """Send ``name`` once per argument list, wait for every result (within
        ``timeout`` seconds in all) and return them in order; a task that
        failed raises here."""
        pending = [self.send(name, args, **options) for args in arglists]
        deadline = time.monotonic() + timeout
        results = []
        for result in pending:
            self.check_alive()
            results.append(result.get(timeout=max(0.1, deadline - time.monotonic()), propagate=True))
        return results

    def outcome(self, result: Any, timeout: float) -> tuple[str, Any]:
        """(state, value or exception) of a task that may fail, within ``timeout`` s."""
        result.get(timeout=timeout, propagate=False)
        return result.state, result.result

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"celery worker -P {self.pool} exited with {self.proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"


class CeleryBeat:
    """``celery -A tests.celeryproj.app beat`` sending record_tick every 0.5 s
    to ``queue``, with its schedule file in ``workdir``."""

    def __init__(self, broker: str, db: dict[str, Any], database: str, queue: str, workdir: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.log_path = Path(workdir) / f"celery-beat-{tag}.log"
        self.env = project_env(broker, db, database, queue, beat="1")
        self.cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            APP,
            "beat",
            "-l",
            "INFO",
            "-s",
            str(Path(workdir) / f"beat-schedule-{tag}"),
            "--pidfile=",
        ]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> CeleryBeat:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *_: Any) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, signal.SIGTERM, grace=10.0)


def run_eager(db: dict[str, Any], database: str, broker: str, values: list[int], timeout: float = 60.0) -> list[dict]:
    """Run ``echo`` with task_always_eager in a fresh Python process (Django
    set up there, as in a project's tests); return the task results."""
    import json

    script = (
        "import json, sys\n"
        "from tests.celeryproj.app import app\n"
        "from tests.celeryproj import tasks\n"
        "assert app.conf.task_always_eager\n"
        "print(json.dumps([tasks.echo.delay(v).get() for v in json.loads(sys.argv[1])]))\n"
    )
    env = project_env(broker, db, database, "greenpool-celery-eager", eager="1")
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(values)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"eager run exited {done.returncode}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_process(results: list[dict]) -> dict[int, set[int]]:
    """Worker pid -> the server sessions its tasks ran on."""
    sessions: dict[int, set[int]] = {}
    for result in results:
        sessions.setdefault(result["pid"], set()).add(result["conn"])
    return sessions
