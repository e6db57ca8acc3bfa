"""Django's own tooling on ENGINE greenpool.backends.mysql, and gunicorn's gevent worker.

Each runs as users run it: a subprocess (django-admin test / migrate / dbshell,
gunicorn -k gevent) against the real MariaDB, with tests/djproject as the project.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.net import free_port, wait_for_port

pytestmark = pytest.mark.mysql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def project_env(mysql_params, mysql_admin):
    """Environment for tests/djproject, with a database of this test's own."""
    db = f"gp_djproject_{os.getpid()}"
    with mysql_admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        cur.execute(f"CREATE DATABASE {db} CHARACTER SET utf8mb4")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.djproject.settings",
        GREENPOOL_DJPROJECT_DB=db,
        GREENPOOL_MYSQL_HOST=str(mysql_params["host"]),
        GREENPOOL_MYSQL_PORT=str(mysql_params["port"]),
        GREENPOOL_MYSQL_USER=mysql_params["user"],
        GREENPOOL_MYSQL_PASSWORD=mysql_params["password"],
        PYTHONPATH=ROOT,
    )
    yield env, db
    with mysql_admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")


def django_admin(env, *args, input_text=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        cwd=ROOT,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_django_test_runner_creates_test_db_and_runs_testcases(project_env):
    env, db = project_env
    result = django_admin(env, "test", "tests.djproject.sample", "-v", "2", "--noinput")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"Creating test database for alias 'default' ('test_{db}')" in output
    assert "Ran 3 tests" in output and "OK" in output


def test_migrate_creates_tables(project_env, mysql_admin):
    env, db = project_env
    result = django_admin(env, "migrate", "--noinput")
    assert result.returncode == 0, result.stderr[-3000:]
    with mysql_admin.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'sample_note'",
            (db,),
        )
        assert cur.fetchone() == (1,)


@pytest.mark.skipif(
    not (shutil.which("mariadb") or shutil.which("mysql")), reason="no mysql/mariadb client binary for dbshell"
)
def test_dbshell_connects_with_the_same_settings(project_env):
    env, db = project_env
    result = django_admin(env, "dbshell", input_text="SELECT DATABASE();\n", timeout=60)
    assert result.returncode == 0, result.stderr
    assert db in result.stdout


def test_backend_works_under_gunicorns_gevent_worker(project_env, mysql_admin):
    """gunicorn -k gevent, 2 workers, max_size=4 each: 200 concurrent requests
    all succeed, each worker's pool runs in gevent mode, and the server never
    sees more than 2 x 4 connections from them."""
    pytest.importorskip("gunicorn")
    env, db = project_env
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "2",
            "--worker-connections",
            "200",
            "-b",
            f"127.0.0.1:{port}",
            "tests.djproject.wsgi:application",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        peak = 0

        def get(_i):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/conn?sleep=0.02", timeout=30) as resp:
                return resp.status, json.loads(resp.read())

        with concurrent.futures.ThreadPoolExecutor(max_workers=100) as executor:
            futures = [executor.submit(get, i) for i in range(200)]
            deadline = time.monotonic() + 60
            while not all(f.done() for f in futures) and time.monotonic() < deadline:
                with mysql_admin.cursor() as cur:
                    cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (db,))
                    peak = max(peak, cur.fetchone()[0])
                time.sleep(0.02)
            results = [f.result(timeout=1) for f in futures]
        assert all(status == 200 for status, _ in results)
        assert {body["mode"] for _, body in results} == {"gevent"}
        assert peak <= 8, f"server saw {peak} connections from 2 workers with max_size=4"
        assert len({body["thread_id"] for _, body in results}) <= 8
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
