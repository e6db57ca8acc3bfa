"""Django's MySQL backend with connections from a greenpool pool.

Modelled on Django's PostgreSQL pool (django/db/backends/postgresql/base.py):
a ``pool`` property, ``close_pool()``, and ``get_new_connection``/``_close``
that check out and check in instead of connecting and disconnecting. Without
OPTIONS["pool"] this is exactly Django's MySQL backend.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

from greenpool.backends.mysql.driver import ensure_pymysql

ensure_pymysql()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db.backends.base.base import NO_DB_ALIAS  # noqa: E402
from django.db.backends.mysql import base as mysql_base  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.utils.functional import cached_property  # noqa: E402
from pymysql.constants import CLIENT  # noqa: E402

from greenpool import _compat, _patchcheck, metrics, mysql, mysql_errors, registry  # noqa: E402
from greenpool.backends.mysql.options import KEEPALIVE_AUTO_MAX, parse_pool_options, pool_kwargs  # noqa: E402
from greenpool.pool import Pool  # noqa: E402

logger = logging.getLogger("greenpool")

# Server facts Django reads once per DatabaseWrapper (VERSION(), sql_mode,
# ...). Under gevent every request greenlet gets a new wrapper, so without
# this cache each request would pay an extra query. Keyed per server.
_server_data: dict[tuple, dict[str, Any]] = {}


class DatabaseWrapper(mysql_base.DatabaseWrapper):
    def __init__(self, settings_dict: dict[str, Any], alias: str = "default") -> None:
        super().__init__(settings_dict, alias)
        # Validate now, when Django first builds the connection, so a bad
        # setting fails at start-up (greenpool-serve touches every alias at
        # boot), not on the first request that needs the database.
        self._pool_options = parse_pool_options(alias, settings_dict.get("OPTIONS", {}).get("pool"))
        if self._pool_options is not None and settings_dict.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
        self._greenlet_linked: Any = None
        self._lease: list | None = None

    # -- the pool -------------------------------------------------------------

    @property
    def pool(self) -> Pool | None:
        if self.alias == NO_DB_ALIAS or self._pool_options is None:
            return None
        return registry.get_pool(self.alias, self._pool_fingerprint(), self._make_pool)

    def close_pool(self) -> None:
        """Close this alias's pool in this process (Django's name for it)."""
        if self._pool_options is not None:
            registry.close_pool(self.alias)

    def _pool_fingerprint(self) -> tuple:
        # The test runner renames NAME to test_<name>; a pool made for the old
        # database must not serve the new one.
        # The options are part of it so that two configurations of one alias
        # (tests that build their own ConnectionHandler) never share a pool;
        # parse_pool_options returns one shared dict per distinct setting.
        s = self.settings_dict
        return (s["NAME"], s["HOST"], s["PORT"], s["USER"], bool(s.get("CONN_HEALTH_CHECKS")), id(self._pool_options))

    def _make_pool(self) -> Pool:
        options = self._pool_options
        assert options is not None
        params = self.get_connection_params()
        # Django sets autocommit itself after every checkout; start there so
        # that costs no round trip.
        params["autocommit"] = True
        connect = mysql.connect_factory(
            params, track_state=options["reset_session"] == "auto", reply_wait=float(options["reply_wait"] or 0)
        )
        enable_checks = bool(self.settings_dict.get("CONN_HEALTH_CHECKS"))
        learn = options["keepalive"] == "auto"
        holder: list[Pool] = []

        def connect_and_learn() -> Any:
            conn = connect()
            if learn and holder:
                try:
                    _learn_keepalive(holder[0], conn)
                except BaseException:
                    # Not the pool's yet: close it here, or it stays open until
                    # garbage-collected. PyMySQL has already closed one whose
                    # read was cut short; after an error reply, say goodbye.
                    if conn.open:
                        conn.close()
                    raise
            return conn

        def reopen_and_learn(conn: Any) -> None:
            conn.reopen()
            if learn:
                _learn_keepalive(holder[0], conn)  # a failure here fails the reopen: discarded at checkin

        pool = Pool(
            connect_and_learn,
            check=mysql.check if enable_checks else None,
            probe=mysql.looks_dead,
            ping=mysql.check,
            reset=mysql.make_reset(options["reset_session"]),
            reconnect=reopen_and_learn,
            retry_connect=mysql_errors.is_transient_connect_error,
            **pool_kwargs(self.alias, options),
        )
        holder.append(pool)
        return pool

    # -- Django's connection life cycle ---------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        params.pop("pool", None)  # ours, not PyMySQL's
        # Django's session set-up sends "SET SQL_AUTO_IS_NULL = 0; SET
        # SESSION TRANSACTION ISOLATION LEVEL ..." as one query, which
        # mysqlclient allows by default and PyMySQL only with this flag.
        params["client_flag"] = params.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        _patchcheck.refuse_late_gevent_patch()
        pool = self.pool
        if pool is None:
            return super().get_new_connection(conn_params)
        conn = pool.getconn()
        # Checked in to the pool it came from, even if the alias's pool is
        # replaced meanwhile (the test runner renames the database).
        conn.greenpool.pool = pool
        conn.greenpool.checked_out_at = time.monotonic()
        self._lease_to_current_thread(conn)
        return conn

    def connect(self) -> None:
        super().connect()
        conn: Any = self.connection
        if isinstance(conn, mysql.PooledConnection):
            # Django's set-up is done: the request's first command may be
            # resent on a new session if it cannot be sent (see _reopen_unsent).
            conn.greenpool.on_unsent = self._reopen_unsent

    def _reopen_unsent(self, conn: Any, exc: Exception) -> None:
        """The checkout's first command found the session gone before anything
        was sent (the server, a proxy or a middlebox closed it while idle):
        open a new session on the same connection, with Django's session set-up
        and connection_created as on any connect; the command is then sent on it."""
        logger.info(
            "pool %r: the session was gone before the request's first statement was sent (%s); "
            "sending it on a new session",
            conn.greenpool.pool.name,
            exc,
        )
        conn.greenpool.pool.reopen(conn)
        self.init_connection_state()
        connection_created.send(sender=type(self), connection=self)

    def is_usable(self) -> bool:
        # Django may ask after the connection was closed; the answer is no.
        conn: Any = self.connection
        if conn is None:
            return False
        usable = super().is_usable()
        if not usable and isinstance(conn, mysql.PooledConnection):
            # Django closes a connection it found unusable: the pool must not get it back.
            conn.greenpool.condemned = "is_usable() found it unusable"
        return usable

    def close_if_unusable_or_obsolete(self) -> None:
        conn: Any = self.connection
        if isinstance(conn, mysql.PooledConnection) and self.get_autocommit() != self.settings_dict["AUTOCOMMIT"]:
            # Django drops a connection whose autocommit was not restored, so
            # as not to take chances with it; so does the pool.
            conn.greenpool.condemned = "autocommit was not restored"
        super().close_if_unusable_or_obsolete()

    def init_connection_state(self) -> None:
        # Django runs its session set-up (SQL_AUTO_IS_NULL, isolation level)
        # on every connect; a pooled connection keeps it until a session
        # reset undoes it, so run it once per physical connection.
        conn: Any = self.connection
        pooled = isinstance(conn, mysql.PooledConnection)
        if pooled and conn.greenpool.initialized:
            return
        super().init_connection_state()
        if pooled:
            init_command = self.settings_dict["OPTIONS"].get("init_command")
            if init_command and conn.greenpool.was_reset:
                # PyMySQL ran init_command at connect; a session reset undid it.
                with self.cursor() as cursor:
                    cursor.execute(init_command)
            conn.greenpool.initialized = True
            conn.mark_clean()  # Django's own set-up is the session's baseline

    def _close(self) -> None:
        # Connections of the no-database alias (test database creation)
        # are plain PyMySQL ones, not the pool's.
        conn: Any = self.connection  # type: ignore[has-type]  # Django declares it untyped
        if not isinstance(conn, mysql.PooledConnection):
            return super()._close()
        self.connection = None
        if self._lease is not None:
            self._lease[0] = None
        with self.wrap_database_errors:
            _checkin(conn)

    @cached_property
    def mysql_server_data(self) -> dict[str, Any]:
        if self._pool_options is None:
            return mysql_base.DatabaseWrapper.mysql_server_data.func(self)  # type: ignore[attr-defined]
        key = (self.settings_dict["HOST"], self.settings_dict["PORT"])
        data = _server_data.get(key)
        if data is None:
            data = mysql_base.DatabaseWrapper.mysql_server_data.func(self)  # type: ignore[attr-defined]
            _server_data[key] = data
        return data

    # -- greenlets and threads that end holding a connection --------------------

    def _lease_to_current_thread(self, conn: Any) -> None:
        """Connections live in thread-local (under gevent: greenlet-local)
        storage. A spawned greenlet or a thread that used the ORM and ended
        without closing would keep its checkout forever; instead:

        * a gevent Greenlet is linked, once per wrapper, and its connection
          returned as soon as it ends;
        * otherwise the wrapper carries a lease that a finalizer returns when
          the garbage collector frees the wrapper (after its thread ended).
        """
        if self._lease is None:
            self._lease = [None]
            weakref.finalize(self, _return_lease, self._lease)
        self._lease[0] = conn
        if self._greenlet_linked is None:
            current = _compat.current_greenlet()
            if current is not None:
                self._greenlet_linked = current
                current.rawlink(self._on_greenlet_end)

    def _on_greenlet_end(self, _greenlet: Any) -> None:
        conn = self.connection
        if conn is None:
            return
        self.connection = None
        if self._lease is not None:
            self._lease[0] = None
        _spawn_checkin(conn)


def _checkin(conn: Any) -> None:
    """Return a pooled connection to the pool it came from."""
    conn.greenpool.on_unsent = None  # the checkin's own rollback is never resent
    pool = conn.greenpool.pool
    if pool.metrics:
        metrics.record_hold(pool.name, time.monotonic() - conn.greenpool.checked_out_at)
    if conn.greenpool.condemned:
        logger.info(
            "pool %r: discarding a connection Django closed as unusable: %s", pool.name, conn.greenpool.condemned
        )
    pool.putconn(conn, discard=bool(conn.greenpool.condemned))  # a closed pool closes it


def _spawn_checkin(conn: Any) -> None:
    """Return an orphaned connection. Under gevent this may run in the hub
    (a link callback, a finalizer), where nothing may block: the rollback
    and checkin go to a fresh greenlet."""
    if _compat.gevent_patched():
        _compat.spawn_greenlet(_checkin_logged, conn)
    else:
        _checkin_logged(conn)


def _checkin_logged(conn: Any) -> None:
    try:
        _checkin(conn)
        logger.debug("returned a connection left by a greenlet or thread that ended without closing it")
    except Exception as exc:
        logger.warning("could not return a connection left by an ended greenlet or thread: %s", exc)


def _return_lease(lease: list) -> None:
    conn = lease[0]
    if conn is not None:
        lease[0] = None
        _spawn_checkin(conn)


def _learn_keepalive(pool: Pool, conn: Any) -> None:
    """keepalive 'auto': read each new session's @@wait_timeout and ping idle
    connections at half of the shortest seen (at most KEEPALIVE_AUTO_MAX), so
    users need not know the server's setting. Sessions differ: a GLOBAL value
    lowered while the pool runs reaches only sessions opened after it, an
    init_command may set its own, a proxy may answer for the server."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT @@wait_timeout")
        (wait_timeout,) = cursor.fetchone()
    # Half the server's idle cut, so two pings fit in it; floor 0.5 s so a
    # very short wait_timeout (tests) is still covered.
    interval = max(0.5, min(float(wait_timeout) / 2, KEEPALIVE_AUTO_MAX))
    if pool.keepalive is None or interval < pool.keepalive:
        pool.set_keepalive(interval)
        logger.info("pool %r: keepalive every %.1fs (server wait_timeout=%ss)", pool.name, interval, wait_timeout)
