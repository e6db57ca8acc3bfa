"""The master process: binds the sockets, starts and supervises the workers.

It never imports Django or the application and never opens a database
connection: each worker is a fresh interpreter (``python -c``) that inherits
only its listening sockets and a pipe back to the master. Over the pipe a
worker says ``ready`` once it accepts traffic, ``hb`` every few seconds, and
``recycle`` when it reached --max-requests.

Signal handlers only record the signal (and wake the loop through a pipe);
the main loop acts on it:

* TERM: graceful stop. Workers stop accepting, finish in-flight requests (up
  to --graceful-timeout), answer keep-alive requests with Connection: close,
  close their pools, exit.
* INT, QUIT: quick stop. Workers close their pools and exit at once.
* HUP: rolling restart, one worker at a time: the new worker starts on the
  same sockets, and only once it is ready is the old one drained.
* TTIN / TTOU: one worker more / less.

A worker that fails at boot during start-up stops the master with the
worker's exit code (errors.ExitCode). One that dies later is replaced, with a
back-off when it keeps dying.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from greenpool.launch import processes, sockets
from greenpool.launch.config import Config
from greenpool.launch.control_dir import ControlDir
from greenpool.launch.errors import BOOT_FAILURES, ExitCode, LaunchError, describe_exit
from greenpool.launch.listeners import Listeners
from greenpool.launch.metrics_server import MasterCounters, MetricsServer
from greenpool.launch.worker import SPEC_ENV

logger = logging.getLogger("greenpool.launch")

DEMO_SETTINGS = "greenpool.demo.settings"

#: The code a worker interpreter runs. gevent patches before anything else
#: is imported, Django and the application included.
BOOT_CODE = {
    "gevent": (
        "import sys\n"
        "_before = sorted(m for m in ('django', 'ssl', 'pymysql', 'greenpool') if m in sys.modules)\n"
        "from gevent import monkey\n"
        "monkey.patch_all()\n"
        "from greenpool.launch import worker_gevent\n"
        "worker_gevent.main(_before)\n"
    ),
    "tornado": "from greenpool.launch import worker_tornado\nworker_tornado.main()\n",
}

_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD")
#: Signals that end a --check-config early (its worker is killed first), and
#: how often the check looks for one while its worker boots.
_CHECK_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
_CHECK_TIMED_OUT = object()


class WorkerPhase(enum.Enum):
    """Where a worker is in its life, as the master sees it: BOOTING until it says
    "ready", READY while it serves, STOPPING once the master has asked it to stop."""

    BOOTING = "booting"
    READY = "ready"
    STOPPING = "stopping"


class WorkerProc:
    """One worker process as the master sees it."""

    def __init__(
        self,
        index: int,
        generation: int,
        proc: subprocess.Popen,
        pipe_fd: int,
        control: str | None,
        listen_names: list[str],
        replaces: WorkerProc | None,
    ) -> None:
        self.index = index
        self.generation = generation
        self.proc = proc
        self.pid = proc.pid
        self.pipe_fd = pipe_fd
        self.buffer = b""
        self.control = control
        self.listen_names = listen_names
        self.replaces = replaces
        self.state = WorkerPhase.BOOTING
        self.spawned_at = time.monotonic()
        self.ready_at: float | None = None
        self.last_seen = self.spawned_at
        self.stop_deadline: float | None = None
        self.graceful_stop = True

    def __repr__(self) -> str:
        return f"<worker {self.index} pid={self.pid} gen={self.generation} {self.state.value}>"

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass


@dataclasses.dataclass(frozen=True)
class AppChoice:
    """What the workers serve, and the environment they start with."""

    description: str
    demo: bool
    env: dict[str, str]


def choose_app(app: str | None, environ: Mapping[str, str]) -> AppChoice:
    """APP, else DJANGO_SETTINGS_MODULE's WSGI application, else the bundled demo site."""
    env = dict(environ)
    if app:
        return AppChoice(f"APP {app}", False, env)
    if environ.get("DJANGO_SETTINGS_MODULE"):
        return AppChoice(f"WSGI_APPLICATION of DJANGO_SETTINGS_MODULE={environ['DJANGO_SETTINGS_MODULE']}", False, env)
    env["DJANGO_SETTINGS_MODULE"] = DEMO_SETTINGS
    return AppChoice("the bundled demo site (no APP and no DJANGO_SETTINGS_MODULE)", True, env)


class RespawnBackoff:
    """When a worker slot gets a new worker after its worker failed (at boot, or
    died): at once the first time, then after 0.5, 1, 2 ... s, at most
    MAX_DELAY, for failures in a row. A worker that served HEALTHY_SECONDS
    before it died starts the count anew."""

    FIRST_DELAY = 0.25
    MAX_DELAY = 30.0
    HEALTHY_SECONDS = 30.0

    def __init__(self) -> None:
        self._failures: dict[int, int] = collections.defaultdict(int)
        self._due: dict[int, float] = {}

    def failed(self, index: int, now: float) -> float:
        """Count a failure of slot ``index``; returns the delay before its next worker."""
        self._failures[index] += 1
        n = self._failures[index]
        delay = 0.0 if n <= 1 else min(self.FIRST_DELAY * 2 ** (n - 1), self.MAX_DELAY)
        self._due[index] = now + delay
        return delay

    def served(self, index: int, seconds: float) -> None:
        if seconds > self.HEALTHY_SECONDS:
            self._failures[index] = 0

    def scheduled(self, index: int) -> bool:
        """A new worker is due for slot ``index`` (now or after its delay)."""
        return index in self._due

    def due(self, index: int, now: float) -> bool:
        return now >= self._due.get(index, 0.0)

    def forget(self, index: int) -> None:
        self._due.pop(index, None)


class Master:
    def __init__(self, config: Config) -> None:
        self.settings = config.values  # the one way the master reads its settings
        self.listeners = Listeners(
            config.addresses,
            self.settings["backlog"],
            worker_ports=self.settings["worker_ports"],
            reuse_port=self.settings["reuse_port"],
        )
        self.desired = config.workers
        self.workers: dict[int, WorkerProc] = {}  # pid -> worker
        self.current: dict[int, WorkerProc] = {}  # index -> the worker serving it
        self.replacement: WorkerProc | None = None  # one new worker at a time (HUP, recycle)
        self.reload_queue: collections.deque[int] = collections.deque()
        self.respawn = RespawnBackoff()
        self.generation = 0
        self.signals: collections.deque[int] = collections.deque()
        self.selector = selectors.DefaultSelector()
        self.started = False  # all initial workers were ready once
        self.stopping = False
        self.graceful = True
        self.exit_code = ExitCode.OK
        self.control_dir = ControlDir(config.resolved_control_dir())
        self.app = choose_app(self.settings.get("app"), os.environ)
        self.timeout = float(self.settings["timeout"])
        self.restart_counts = MasterCounters()
        self.metrics_server: MetricsServer | None = None
        self.boot_timeout = max(60.0, self.timeout * 2, self.settings["db_boot_timeout"] * 4)

    # -- start ---------------------------------------------------------------

    def prepare_demo(self) -> None:
        """Migrate and seed the demo database once, before any worker starts,
        in a child process: the master itself never holds a connection."""
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "greenpool.demo.prepare"],
                env=self.app.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_DEMO_PREPARE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise LaunchError(
                ExitCode.DATABASE_UNAVAILABLE,
                f"preparing the demo database (migrate and seed) did not finish "
                f"within {_DEMO_PREPARE_TIMEOUT}s: is the database answering, or is a table locked?",
            ) from None
        output = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0:
            logger.info("demo database migrated and seeded in %.1fs", time.monotonic() - started)
            return
        if proc.returncode == ExitCode.DATABASE_UNAVAILABLE and not self.settings["require_db"]:
            logger.warning(
                "demo: %s; starting anyway: /hello works, database pages answer 503 until the database "
                "answers (restart greenpool-serve then, to migrate and seed it)",
                output,
            )
            return
        code = ExitCode(proc.returncode) if proc.returncode in {c.value for c in ExitCode} else ExitCode.FAILURE
        raise LaunchError(
            code, f"preparing the demo database failed (exit {describe_exit(proc.returncode)}):\n{output}"
        )

    def install_signals(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self.wakeup_fd = read_fd
        self.selector.register(read_fd, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for name in _SIGNALS:
            signal.signal(getattr(signal, name), self._record_signal)

    def _record_signal(self, signum: int, _frame: Any) -> None:
        # Only record: the main loop acts.
        self.signals.append(signum)

    def write_pidfile(self) -> None:
        path = self.settings.get("pid")
        if path:
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w") as f:
                    f.write(f"{os.getpid()}\n")
                os.replace(tmp, path)
            except OSError as exc:
                sockets.remove_file(tmp)
                raise LaunchError(ExitCode.USAGE, f"--pid {path}: {exc.strerror or exc}") from None

    def run(self) -> int:
        try:
            self.listeners.bind(self.desired)
            self.start_metrics()
            self.control_dir.prepare()
            if self.app.demo:
                self.prepare_demo()
            self.write_pidfile()
        except LaunchError as exc:
            self.listeners.close()
            self.stop_metrics()
            self.control_dir.remove_if_empty()
            logger.error("%s", exc.message)
            return int(exc.code)
        self.install_signals()
        logger.info(
            "greenpool-serve %s master %d: %d %s worker(s), %s, serving %s",
            _version(),
            os.getpid(),
            self.desired,
            self.settings["server"],
            "one port per worker"
            if self.settings["worker_ports"]
            else "SO_REUSEPORT"
            if self.settings["reuse_port"]
            else "one shared socket",
            self.app.description,
        )
        try:
            for index in range(self.desired):
                self.spawn(index)
            self.loop()
        except BaseException as exc:
            # A bug here must not look like a clean stop, nor leave the workers behind.
            self.exit_code = ExitCode.FAILURE
            logger.critical("the master failed (%s: %s): stopping every worker", type(exc).__name__, exc)
            self.abort_workers()
            raise
        finally:
            self.cleanup()
        return int(self.exit_code)

    # -- workers ----------------------------------------------------------------

    def _cannot_start(
        self, index: int, replaces: WorkerProc | None, check_only: bool, exc: OSError
    ) -> WorkerProc | None:
        """A worker process could not be started: retry later, or end a rolling restart."""
        if replaces is not None:
            logger.error("cannot start a new worker %d: %s; the rolling restart stops here", index, exc)
            self.reload_queue.clear()
        elif not check_only:
            self.schedule_respawn(index, f"cannot be started ({exc})")
        return None  # spawn()'s answer: no worker

    def spawn(self, index: int, replaces: WorkerProc | None = None, check_only: bool = False) -> WorkerProc | None:
        """Start a worker; None when the process cannot be started (then retried later)."""
        self.generation += 1
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:  # out of file descriptors, before the worker's pipe exists
            return self._cannot_start(index, replaces, check_only, exc)
        listen, listen_fds = self.listeners.for_worker(index, self.desired)
        pass_fds = [write_fd, *listen_fds]
        control = None if check_only else self.control_dir.worker_socket(index, self.generation)
        names = self.listeners.names(index)
        spec = {
            "index": index,
            "generation": self.generation,
            "master_pid": os.getpid(),
            "pipe_fd": write_fd,
            "listen": listen,
            "listen_names": names,
            "control_path": control,
            "check_only": check_only,
            # The master's first worker weighs the connection budget (greenpool/launch/budget.py):
            # no worker of this master held a pool before it, so what it finds in use is other
            # clients' (and at most one connection of each sibling booting beside it).
            "check_budget": self.generation == 1,
            "settings": dict(self.settings),
        }
        env = dict(self.app.env)
        env[SPEC_ENV] = json.dumps(spec)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", BOOT_CODE[self.settings["server"]]],
                env=env,
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:  # out of processes, memory or file descriptors
            os.close(read_fd)
            return self._cannot_start(index, replaces, check_only, exc)
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        w = WorkerProc(index, self.generation, proc, read_fd, control, names, replaces)
        self.workers[w.pid] = w
        self.selector.register(read_fd, selectors.EVENT_READ, w)
        if replaces is None and not check_only:
            self.current[index] = w
        logger.debug("started worker %d (pid %d, generation %d)", index, w.pid, w.generation)
        return w

    def on_message(self, w: WorkerProc, message: str) -> None:
        w.last_seen = time.monotonic()
        if message == "ready":
            self.on_ready(w)
        elif message == "recycle":
            # The worker repeats it until it is replaced: ignore it while its replacement boots.
            replacing = self.replacement is not None and self.replacement.replaces is w
            if (
                self.current.get(w.index) is w
                and w.index not in self.reload_queue
                and not replacing
                and not self.stopping
            ):
                logger.info("worker %d (pid %d) reached --max-requests: replacing it", w.index, w.pid)
                self.reload_queue.append(w.index)

    def on_ready(self, w: WorkerProc) -> None:
        w.ready_at = time.monotonic()
        if w.state == WorkerPhase.STOPPING:
            # Told to stop while it booted: it stays stopping, with its deadline.
            # Its handlers are installed now, so a quick stop can be a QUIT.
            if not w.graceful_stop:
                w.signal(signal.SIGQUIT)
            return
        w.state = WorkerPhase.READY
        if self.stopping:
            self.stop_worker(w, self.graceful)
            return
        if w.replaces is not None:
            old = w.replaces
            w.replaces = None
            self.replacement = None
            if self.current.get(w.index) is old:
                self.stop_worker(old, graceful=True)
            self.current[w.index] = w
            self.restart_counts.restarted("replaced")
            logger.info("worker %d replaced: pid %d -> %d", w.index, old.pid, w.pid)
        self.write_state()
        if not self.started and all(
            self.current.get(i) is not None and self.current[i].state == WorkerPhase.READY for i in range(self.desired)
        ):
            self.started = True
            urls = ", ".join(self.listeners.urls())
            logger.info("all %d workers ready; listening on %s", self.desired, urls)
            if self.app.demo:
                first = self.listeners.urls()[0]
                print(
                    f"greenpool-serve: demo site at {first}/hello (also /read /tx /slow /whoami /healthz)",
                    file=sys.stderr,
                    flush=True,
                )

    def stop_worker(self, w: WorkerProc, graceful: bool) -> None:
        # A worker that has not said "ready" may not have its signal handlers yet:
        # QUIT would end it with a core dump, TERM just ends it (or, once the
        # handlers are there, drains it; on_ready then sends the QUIT).
        quick = signal.SIGQUIT if w.ready_at is not None else signal.SIGTERM
        if w.state == WorkerPhase.STOPPING:
            if not graceful:
                w.graceful_stop = False
                w.signal(quick)
                w.stop_deadline = min(w.stop_deadline or 0, time.monotonic() + 3.0)
            return
        w.state = WorkerPhase.STOPPING
        w.graceful_stop = graceful
        w.signal(signal.SIGTERM if graceful else quick)
        w.stop_deadline = time.monotonic() + (self.stop_grace() if graceful else 3.0)

    def stop_grace(self) -> float:
        return self.settings["graceful_timeout"] + 5.0

    def reap(self) -> None:
        for w in list(self.workers.values()):
            rc = w.proc.poll()
            if rc is not None:
                self.on_exit(w, rc)

    def on_exit(self, w: WorkerProc, rc: int) -> None:
        self.read_pipe(w)
        self.selector.unregister(w.pipe_fd)
        os.close(w.pipe_fd)
        del self.workers[w.pid]
        if w.control:
            try:
                os.unlink(w.control)
            except OSError:
                pass
        was_current = self.current.get(w.index) is w
        if was_current:
            del self.current[w.index]
        if self.replacement is w:
            self.replacement = None
        how = describe_exit(rc)
        if w.state == WorkerPhase.STOPPING or self.stopping:
            logger.info("worker %d (pid %d) exited: %s", w.index, w.pid, how)
        elif w.state == WorkerPhase.BOOTING:
            if w.replaces is not None:
                logger.error(
                    "worker %d (pid %d) failed to boot (exit %s): the rolling restart stops here; "
                    "the old workers keep serving",
                    w.index,
                    w.pid,
                    how,
                )
                self.reload_queue.clear()
            elif not self.started:
                code = ExitCode(rc) if rc in {c.value for c in BOOT_FAILURES} else ExitCode.WORKER_BOOT_ERROR
                logger.error(
                    "worker %d (pid %d) failed to boot (exit %s); stopping. Its message is above.", w.index, w.pid, how
                )
                self.exit_code = code
                self.begin_stop(graceful=False)
            else:
                self.restart_counts.restarted("failed_boot")
                self.schedule_respawn(w.index, f"failed to boot (exit {how})")
        else:
            logger.warning("worker %d (pid %d) died unexpectedly (exit %s)", w.index, w.pid, how)
            if w.ready_at is not None:
                self.respawn.served(w.index, time.monotonic() - w.ready_at)
            if was_current:
                self.restart_counts.restarted("died")
                self.schedule_respawn(w.index, "died")
        self.write_state()

    def schedule_respawn(self, index: int, why: str) -> None:
        delay = self.respawn.failed(index, time.monotonic())
        logger.warning("worker %d %s: restarting it%s", index, why, f" in {delay:.1f}s" if delay else "")

    def read_pipe(self, w: WorkerProc) -> None:
        while True:
            try:
                data = os.read(w.pipe_fd, 4096)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            w.buffer += data
        *lines, w.buffer = w.buffer.split(b"\n")
        for line in lines:
            if line:
                self.on_message(w, line.decode(errors="replace"))

    # -- the loop -------------------------------------------------------------------

    def wait_for_events(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a signal (through the wake-up pipe) or a
        worker's message, and read what came."""
        for key, _ in self.selector.select(timeout=timeout):
            if key.data is None:
                try:
                    while os.read(self.wakeup_fd, 512):
                        pass
                except BlockingIOError:
                    pass
            elif key.data.pid in self.workers:
                self.read_pipe(key.data)

    def loop(self) -> None:
        while True:
            self.wait_for_events(0.25)
            self.handle_signals()
            self.reap()
            self.check_deadlines()
            if self.stopping:
                if not self.workers:
                    return
                continue
            self.maintain()

    def handle_signals(self) -> None:
        """Act on the signals the handler recorded, in order: SIGTERM -> handle_term, ..."""
        while self.signals:
            name = signal.Signals(self.signals.popleft()).name
            getattr(self, f"handle_{name[3:].lower()}")(name)

    def handle_chld(self, name: str) -> None:
        """Only wakes the loop, which reaps exited workers itself."""

    def handle_term(self, name: str) -> None:
        logger.info("%s: graceful stop", name)
        self.begin_stop(graceful=True)

    def handle_int(self, name: str) -> None:
        logger.info("%s: quick stop", name)
        self.begin_stop(graceful=False)

    handle_quit = handle_int

    def handle_hup(self, name: str) -> None:
        if not self.stopping:
            logger.info("%s: rolling restart of %d workers, one at a time", name, self.desired)
            self.reload_queue = collections.deque(range(self.desired))

    def handle_ttin(self, name: str) -> None:
        if not self.stopping:
            self.add_worker()

    def handle_ttou(self, name: str) -> None:
        if not self.stopping:
            self.remove_worker()

    def add_worker(self) -> None:
        index = self.desired
        why = self.listeners.port_past_max(index)
        if why is not None:
            logger.error("TTIN: cannot add worker %d: %s", index, why)
            return
        try:
            self.listeners.bind_worker(index)
        except LaunchError as exc:
            logger.error("TTIN: cannot add worker %d: %s", index, exc.message)
            return
        self.desired += 1
        logger.info("TTIN: %d workers", self.desired)
        self.spawn(index)

    def remove_worker(self) -> None:
        if self.desired <= 1:
            logger.info("TTOU: keeping the last worker")
            return
        self.desired -= 1
        index = self.desired
        logger.info("TTOU: %d workers", self.desired)
        w = self.current.pop(index, None)
        if w is not None:
            self.stop_worker(w, graceful=True)
        if self.replacement is not None and self.replacement.index == index:
            self.stop_worker(self.replacement, graceful=False)
        self.respawn.forget(index)
        self.listeners.unbind_worker(index)

    def begin_stop(self, graceful: bool) -> None:
        if self.stopping and (not self.graceful or graceful):
            return
        self.stopping = True
        self.graceful = graceful
        self.reload_queue.clear()
        # New connections are refused from now on (as gunicorn does); the
        # workers keep their own copies of the sockets until they stop
        # accepting, and finish what they accepted.
        self.listeners.close()
        for w in list(self.workers.values()):
            if w.state == WorkerPhase.STOPPING and graceful:
                continue
            self.stop_worker(w, graceful)

    def abort_workers(self) -> None:
        """After a failure of the master itself: quick-stop every worker, wait up to
        3 s, kill what is left (without the loop, nothing else would)."""
        self.stopping, self.graceful = True, False
        for w in list(self.workers.values()):
            self.stop_worker(w, graceful=False)
        deadline = time.monotonic() + 3.0
        for w in list(self.workers.values()):
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %d (pid %d) did not stop in time: killing it", w.index, w.pid)
                w.signal(signal.SIGKILL)
                _reap(w)

    def check_deadlines(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.state == WorkerPhase.STOPPING:
                if w.stop_deadline is not None and now > w.stop_deadline:
                    logger.warning("worker %d (pid %d) did not stop in time: killing it", w.index, w.pid)
                    w.signal(signal.SIGKILL)
                    w.stop_deadline = None
            elif w.state == WorkerPhase.BOOTING:
                if now - w.spawned_at > self.boot_timeout:
                    logger.error(
                        "worker %d (pid %d) not ready after %.0fs: killing it", w.index, w.pid, self.boot_timeout
                    )
                    w.signal(signal.SIGKILL)
                    w.spawned_at = float("inf")
            elif self.timeout and now - w.last_seen > self.timeout:
                logger.error(
                    "worker %d (pid %d) silent for %.1fs (--timeout=%gs): killing it",
                    w.index,
                    w.pid,
                    now - w.last_seen,
                    self.timeout,
                )
                w.signal(signal.SIGKILL)
                w.last_seen = float("inf")

    def maintain(self) -> None:
        now = time.monotonic()
        for index in range(self.desired):
            if index in self.current:
                continue
            if self.replacement is not None and self.replacement.index == index:
                continue
            if self.respawn.due(index, now):
                self.respawn.forget(index)
                self.spawn(index)
        if self.replacement is None and self.reload_queue:
            if any(w.state == WorkerPhase.BOOTING for w in self.current.values()):
                return  # one new worker at a time
            index = self.reload_queue.popleft()
            old = self.current.get(index)
            if index < self.desired and old is not None and old.state == WorkerPhase.READY:
                self.replacement = self.spawn(index, replaces=old)

    # -- state for `greenpool-serve stats` and /metrics ------------------------------

    def start_metrics(self) -> None:
        if self.settings.get("metrics_bind"):
            self.metrics_server = MetricsServer(self.settings["metrics_bind"], self.ready_workers, self.restart_counts)
            self.metrics_server.start()

    def stop_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    def ready_workers(self) -> list[tuple[str, str]]:
        """(label, control socket) of each serving worker; called from the metrics thread."""
        return [
            (f"{w.index}-{w.pid}", w.control)
            for w in list(self.current.values())
            if w.state == WorkerPhase.READY and w.control
        ]

    def write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started": processes.start_ticks(os.getpid()),  # with pid: this process, not a later one with its PID
            "server": self.settings["server"],
            "bind": [str(a) for a in self.listeners.addresses],
            "worker_ports": self.settings["worker_ports"],
            "workers": [
                {
                    "index": w.index,
                    "pid": w.pid,
                    "generation": w.generation,
                    "state": w.state.value,
                    "control": w.control,
                    "listen": w.listen_names,
                }
                for w in sorted(self.workers.values(), key=lambda w: (w.index, w.generation))
            ],
        }
        self.control_dir.write_state(state)

    # -- the end ---------------------------------------------------------------------

    def cleanup(self) -> None:
        self.stop_metrics()
        self.listeners.close()
        self.control_dir.remove()
        path = self.settings.get("pid")
        if path:
            sockets.remove_file(path)
        logger.info("master %d exiting with %s", os.getpid(), ExitCode(self.exit_code).describe())

    # -- --check-config -----------------------------------------------------------------

    def check(self) -> int:
        """Load the app and open the pools in one worker-like process, then exit.

        Signals are recorded as under run(). A stop signal (TERM from a script's
        timeout, Ctrl-C) kills the check's worker at once: it may hang in the app's
        import, and it watches for its master only once it serves."""
        self.settings["require_db"] = True
        self.install_signals()
        proc_w = self.spawn(0, check_only=True)
        if proc_w is None:
            logger.error("configuration check failed: the worker process could not be started")
            return int(ExitCode.WORKER_BOOT_ERROR)
        rc = self._wait_for_check(proc_w)
        os.close(proc_w.pipe_fd)
        if rc is _CHECK_TIMED_OUT:
            # An app import or a database handshake that hangs: the same limit
            # as a booting worker under run().
            logger.error(
                "configuration check failed: the worker (pid %d) was not done after %.0fs: killing it",
                proc_w.pid,
                self.boot_timeout,
            )
            return int(ExitCode.WORKER_BOOT_ERROR)
        if isinstance(rc, signal.Signals):
            logger.error("configuration check stopped by %s: killed its worker (pid %d)", rc.name, proc_w.pid)
            return 128 + rc.value  # what a shell reports for a command a signal ended
        assert isinstance(rc, int)
        if rc == 0:
            logger.info("configuration OK: %s loads, every database answers", self.app.description)
        else:
            logger.error("configuration check failed: exit %s", describe_exit(rc))
        return rc if rc >= 0 else int(ExitCode.WORKER_BOOT_ERROR)

    def _wait_for_check(self, proc_w: WorkerProc) -> int | signal.Signals | object:
        """The check worker's exit status; or, after killing it, the stop signal
        the master got, or _CHECK_TIMED_OUT. Waits in the master's selector, which
        SIGCHLD and the stop signals wake through the signal wake-up pipe."""
        deadline = time.monotonic() + self.boot_timeout
        while True:
            rc = proc_w.proc.poll()
            if rc is not None:
                return rc
            stop = next((signal.Signals(s) for s in self.signals if s in _CHECK_STOP_SIGNALS), None)
            remaining = deadline - time.monotonic()
            if stop is not None or remaining <= 0:
                proc_w.signal(signal.SIGKILL)
                _reap(proc_w)
                return stop if stop is not None else _CHECK_TIMED_OUT
            self.wait_for_events(min(remaining, 1.0))


def _reap(w: WorkerProc, timeout: float = 10.0) -> None:
    """Wait for a worker sent SIGKILL. A process in uninterruptible sleep (a
    hung disk or NFS) dies only when that ends: log it rather than hang the
    master's own failure path with it."""
    try:
        w.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.error(
            "worker %d (pid %d) still alive %.0fs after SIGKILL (uninterruptible sleep?); leaving it",
            w.index,
            w.pid,
            timeout,
        )


_DEMO_PREPARE_TIMEOUT = 300


def _version() -> str:
    from greenpool import __version__

    return __version__
