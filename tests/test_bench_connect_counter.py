"""bench/connect_counter.py counts PyMySQL connects per process, readable from outside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import connect_counter
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_counts_attempts_and_successes_of_another_process(tmp_path):
    # Nothing listens on the port: one attempt, no success. In a subprocess, so this
    # test process's PyMySQL stays unwrapped.
    port = free_port()
    code = (
        "import sys, pymysql\n"
        "from bench import connect_counter\n"
        f"connect_counter.install({str(tmp_path)!r})\n"
        "try:\n"
        f"    pymysql.connect(host='127.0.0.1', port={port}, user='x', connect_timeout=2)\n"
        "except pymysql.err.OperationalError:\n"
        "    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
    assert connect_counter.read(str(tmp_path)) == {"attempts": 1, "successes": 0}
    connect_counter.clear(str(tmp_path))
    assert connect_counter.read(str(tmp_path)) == {"attempts": 0, "successes": 0}


def test_reading_a_missing_directory_is_zero(tmp_path):
    assert connect_counter.read(str(tmp_path / "none")) == {"attempts": 0, "successes": 0}
