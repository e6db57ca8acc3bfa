"""Beyond one machine: two app hosts behind one nginx, each host a network
namespace that this test makes (and deletes, whatever happens).

    namespace lb:  nginx on 127.0.0.1:8080, the load client
        10.N.1.1 --veth-- 10.N.1.2  namespace a: greenpool-serve, 2 workers on :8001, :8002
        10.N.2.1 --veth-- 10.N.2.2  namespace b: greenpool-serve, 2 workers on :8001, :8002

The 10.N addresses exist only inside these namespaces; every request goes to
127.0.0.1 inside lb or to those addresses. The app hosts reach MariaDB through
its unix socket (a path in the shared file system), as a database host would be
reached over the network. Needs root and `ip netns`; skipped with the reason
otherwise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from tests.support.nginx import Nginx, render, wait_until
from tests.test_launch_serve import Server, database, load_scale  # noqa: F401  (database: a fixture)

pytestmark = [pytest.mark.mysql, pytest.mark.nginx]

APP_PORT = 8001
LB_PORT = 8080


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


class Hosts:
    """Three namespaces (lb, a, b) and a veth pair from lb to each app host."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.net = random.randint(200, 250)  # 10.net.{1,2}.0/30, inside the namespaces only
        self.ns = {"lb": f"gp-lb-{tag}", "a": f"gp-a-{tag}", "b": f"gp-b-{tag}"}
        self.veth = {"a": (f"gpa{tag}", f"gpa{tag}p"), "b": (f"gpb{tag}", f"gpb{tag}p")}
        self.made: list[str] = []

    def app_address(self, host: str) -> str:
        return f"10.{self.net}.{1 if host == 'a' else 2}.2"

    def lb_address(self, host: str) -> str:
        return f"10.{self.net}.{1 if host == 'a' else 2}.1"

    def exec(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host]]

    def create(self) -> None:
        for name in self.ns.values():
            _ip("netns", "add", name)
            self.made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        for host, (lb_end, app_end) in self.veth.items():
            _ip(
                "-n",
                self.ns["lb"],
                "link",
                "add",
                lb_end,
                "type",
                "veth",
                "peer",
                "name",
                app_end,
                "netns",
                self.ns[host],
            )
            _ip("-n", self.ns["lb"], "addr", "add", f"{self.lb_address(host)}/30", "dev", lb_end)
            _ip("-n", self.ns[host], "addr", "add", f"{self.app_address(host)}/30", "dev", app_end)
            _ip("-n", self.ns["lb"], "link", "set", lb_end, "up")
            _ip("-n", self.ns[host], "link", "set", app_end, "up")

    def cut(self, host: str) -> None:
        """The host drops off the network: its end of the link goes down (packets to it are lost)."""
        _ip("-n", self.ns[host], "link", "set", self.veth[host][1], "down")

    def delete(self) -> None:
        for name in reversed(self.made):  # deleting a namespace deletes its veth ends
            _ip("netns", "del", name, check=False)
        self.made = []


def _skip_without_namespaces() -> None:
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): cannot make network namespaces for the app hosts")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add): run the suite as root, as CI does")
    probe = f"gp-probe-{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace here (ip netns add: {made.stderr.strip()})")


def _mysql_socket(mysql_admin) -> str:
    with mysql_admin.cursor() as cur:
        cur.execute("SELECT @@socket")
        path = cur.fetchone()[0]
    if not path or not os.path.exists(path) or not stat.S_ISSOCK(os.stat(path).st_mode):
        pytest.skip(
            f"the MySQL server's unix socket ({path!r}) is not on this file system: "
            "the app hosts in their namespaces cannot reach the database"
        )
    return path


def ns_loadgen(hosts: Hosts, urls: list[str], clients: int, requests: int, duration: float) -> dict[str, Any]:
    """The load client inside lb (bounded in count and time)."""
    proc = subprocess.run(
        [
            *hosts.exec("lb"),
            sys.executable,
            "-m",
            "greenpool.launch.loadgen",
            *urls,
            "--clients",
            str(clients),
            "--requests",
            str(requests),
            "--duration",
            str(duration),
            "--timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 90,
    )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def by_host(result: dict[str, Any], pids: dict[str, set[int]]) -> dict[str, int]:
    counts = {"a": 0, "b": 0, "?": 0}
    for worker, n in result["workers"].items():
        pid = int(worker.split("-")[1])
        counts[next((h for h, p in pids.items() if pid in p), "?")] += n
    return counts


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("ok", "failed", "statuses", "errors", "rps")}


@pytest.fixture
def hosts():
    _skip_without_namespaces()
    h = Hosts()
    try:
        h.create()
        yield h
    finally:
        h.delete()


def test_two_app_hosts_behind_one_nginx_traffic_moves_off_a_host_that_goes_away(
    hosts,
    tmp_path,
    mysql_params,
    mysql_admin,
    database,  # noqa: F811 - the fixture imported above
):
    socket_path = _mysql_socket(mysql_admin)
    scale = load_scale()
    started: list[Server | Nginx] = []

    def app_host(host: str) -> Server:
        server = Server(
            tmp_path,
            mysql_params,
            database,
            "--worker-ports",
            "--forwarded-allow-ips",
            hosts.lb_address(host),
            workers=2,
            port=APP_PORT,
            bind=[f"{hosts.app_address(host)}:{APP_PORT}"],
            env={"GREENPOOL_MYSQL_HOST": socket_path},
        )
        server.cmd = [*hosts.exec(host), *server.cmd]
        started.append(server)
        return server.start()

    try:
        # One host after the other: the first migrates and seeds the shared database.
        servers = {"a": app_host("a"), "b": app_host("b")}
        conf = render(
            "-w",
            "2",
            "--worker-ports",
            "-b",
            f"0.0.0.0:{APP_PORT}",
            "--upstream-host",
            hosts.app_address("a"),
            "--upstream-host",
            hosts.app_address("b"),
            "--listen",
            f"127.0.0.1:{LB_PORT}",
            "--connect-timeout",
            "0.5",
            "--read-timeout",
            "3",
            "--max-fails",
            "2",
            "--fail-timeout",
            "6",
        )
        nginx = Nginx(tmp_path / "nginx", conf, wrap=hosts.exec("lb"))
        started.append(nginx)
        nginx.start()
        url = f"http://127.0.0.1:{LB_PORT}/read"
        wait_until(lambda: ns_loadgen(hosts, [url], 1, 1, 5)["ok"] == 1, 20, "nginx in lb answering")

        def pids() -> dict[str, set[int]]:
            return {h: set(s.worker_pids().values()) for h, s in servers.items() if s.proc.poll() is None}

        # 1. Both hosts serve, and each sees the client's address, not the proxy's.
        both = ns_loadgen(hosts, [url], 20, max(300, int(800 * scale)), 30)
        spread = by_host(both, pids())
        print("both hosts up:", _summary(both), spread)
        assert both["failed"] == 0, both
        assert spread["a"] > 0.2 * both["ok"] and spread["b"] > 0.2 * both["ok"], spread
        who = subprocess.run(
            [
                *hosts.exec("lb"),
                sys.executable,
                "-c",
                "import http.client, json\n"
                "seen = set()\n"
                "for _ in range(8):\n"
                f"    c = http.client.HTTPConnection('127.0.0.1', {LB_PORT}, timeout=10)\n"
                "    c.request('GET', '/whoami'); seen.add(json.loads(c.getresponse().read())['remote_addr']); c.close()\n"
                "print(json.dumps(sorted(seen)))\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(who.stdout) == ["127.0.0.1"], (who.stdout, who.stderr)

        # 2. Host a's server dies mid-load (master and workers killed): connections to it are
        #    refused or reset, which nginx passes on to host b. Not one GET fails.
        duration = max(6.0, 12 * scale)
        before = pids()
        load = _start_ns_loadgen(hosts, [url], 20, duration)
        time.sleep(duration / 3)
        os.killpg(servers["a"].proc.pid, signal.SIGKILL)  # the session we started in namespace a
        killed = _finish(load, duration)
        print("host a killed mid-load:", _summary(killed), by_host(killed, before))
        assert killed["failed"] == 0, killed
        after = ns_loadgen(hosts, [url], 10, 200, 20)
        assert after["failed"] == 0 and by_host(after, before) == {"a": 0, "b": after["ok"], "?": 0}, after

        # 3. Host a comes back; once its fail_timeout is over, nginx sends it traffic again.
        servers["a"].stop()
        servers["a"] = app_host("a")
        deadline = time.monotonic() + 20
        while True:
            back = ns_loadgen(hosts, [url], 20, max(200, int(400 * scale)), 20)
            spread = by_host(back, pids())
            assert back["failed"] == 0, back
            if spread["a"] > 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        print("host a back:", _summary(back), spread)
        assert spread["a"] > 0 and spread["b"] > 0, (back, spread)

        # 4. Host b drops off the network mid-load (its link goes down: packets are lost, nothing
        #    is refused). Requests in flight on b cannot be answered (nginx gives 504 after
        #    --read-timeout; it does not replay them: they may have run) and new connections to b
        #    time out (--connect-timeout) until max_fails takes b out for fail_timeout. Then
        #    everything goes to a.
        before = pids()
        load = _start_ns_loadgen(hosts, [url], 20, 4.5)
        time.sleep(1.5)
        hosts.cut("b")
        cut = _finish(load, 4.5)
        print("host b cut off mid-load:", _summary(cut), by_host(cut, before))
        # Bounded loss: at most the requests in flight on b at the cut (20 clients in all)
        # plus the connect timeouts before max_fails (2 for each of b's two servers).
        assert cut["failed"] <= 20 + 2 * 2, cut
        assert set(cut["statuses"]) <= {"200", "502", "504"}, cut
        assert by_host(cut, before)["a"] > 0
        tail = ns_loadgen(hosts, [url], 10, 300, 2)  # still within fail_timeout: b is left out
        print("after the cut:", _summary(tail), by_host(tail, before))
        assert tail["failed"] == 0 and by_host(tail, before)["b"] == 0, tail
    finally:
        for thing in reversed(started):
            thing.stop()


def _start_ns_loadgen(hosts: Hosts, urls: list[str], clients: int, duration: float) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *hosts.exec("lb"),
            sys.executable,
            "-m",
            "greenpool.launch.loadgen",
            *urls,
            "--clients",
            str(clients),
            "--requests",
            str(10**6),
            "--duration",
            str(duration),
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, duration: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=duration + 90)
    assert out, err
    return json.loads(out)
