"""A fake DB-API module for the pool's own unit tests (as SQLAlchemy's tests do).

Switches make connect fail or hang, and queries hang, so the pool's behaviour
under failure can be tested without a server. It is never the only test of a
feature: tests/test_pool_mysql.py runs the pool over real PyMySQL connections.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable


class FakeError(Exception):
    """Stands in for the driver's OperationalError."""


class FakeConnection:
    def __init__(self, db: FakeDB, ident: int) -> None:
        self.db = db
        self.ident = ident
        self.closed = False
        self.in_transaction = False
        self.alive = True  # False: the "server" dropped it

    def query(self, sql: str = "SELECT 1") -> int:
        if self.closed or not self.alive:
            raise FakeError(f"connection {self.ident} is gone")
        if self.db.query_hangs:
            self.db.sleep(self.db.query_hangs)
        return 1

    def ping(self) -> None:
        self.db.pings += 1
        if self.db.ping_hangs:
            self.db.sleep(self.db.ping_hangs)
        if self.closed or not self.alive:
            raise FakeError(f"connection {self.ident} is gone")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.db.closed_count += 1
            with self.db.lock:
                self.db.live -= 1

    def __repr__(self) -> str:
        return f"<FakeConnection {self.ident}{' closed' if self.closed else ''}>"


class FakeDB:
    """A fake server: counts live connections and remembers the most seen."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.live = 0
        self.max_live = 0
        self.connects = 0
        self.closed_count = 0
        self.pings = 0
        self.connect_fails = False
        self.connect_hangs = 0.0  # seconds each connect takes
        self.query_hangs = 0.0
        self.ping_hangs = 0.0
        self.made: list[FakeConnection] = []

    def connect(self) -> FakeConnection:
        if self.connect_hangs:
            # Yield mid-connect, as a real connect does under gevent: the
            # window in which a pool that checks its cap outside the lock
            # lets more connections through.
            self.sleep(self.connect_hangs)
        if self.connect_fails:
            raise FakeError("connect refused: server down")
        conn = FakeConnection(self, next(self.ids))
        with self.lock:
            self.connects += 1
            self.live += 1
            self.max_live = max(self.max_live, self.live)
        self.made.append(conn)
        return conn
