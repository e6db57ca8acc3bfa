"""Malformed and hostile HTTP at both workers, directly and through the generated nginx config.

Every case is raw bytes on a socket of its own (tests/support/rawhttp.py), all cases of a
class at once. Each case names what a correct server may answer: a 4xx, a closed connection
where HTTP allows one, or the request served (2xx) where the input is valid HTTP. Whatever
the case, no answer is a 5xx and no connection hangs. After each class the worker must still
serve a good request, its pool must have nothing in use, and its descriptors and memory must
be back where they were.

The generative part mutates valid requests with a seeded generator: GREENPOOL_LOAD_SCALE=ci
runs a fixed number of cases, the full run more (GREENPOOL_HTTP_FUZZ_CASES overrides).
The counts of each run are printed (pytest -s) and appended to .run/http-input.jsonl.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import rawhttp
from tests.support.nginx import Nginx, render
from tests.support.serve import ServeProcess, rss_kib, scaled

pytestmark = pytest.mark.mysql

SERVERS = ["gevent", "tornado"]
KEEP_ALIVE = 2  # seconds: incomplete requests are closed by the worker after this
RESULTS = Path(__file__).resolve().parents[2] / ".run" / "http-input.jsonl"

OK4 = {"4xx", "close"}  # refused: a 4xx, or a close where HTTP allows one
SERVED = {"2xx"}
EITHER = {"2xx", "4xx", "close"}  # valid but unusual input: serving or refusing it are both correct


def req(head: str = "GET /hello HTTP/1.1", *headers: str, body: bytes = b"", host: str | None = "localhost") -> bytes:
    lines = [head] + ([f"Host: {host}"] if host is not None else []) + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# name -> (bytes, or a list of parts sent 50 ms apart; outcomes allowed)
CASES: dict[str, dict[str, tuple[Any, set[str]]]] = {
    "request line": {
        "garbage": (b"GARBAGE\r\n\r\n", OK4),
        "method only": (b"GET\r\n\r\n", OK4),
        "four words": (req("GET /hello HTTP/1.1 extra"), OK4),
        "unknown version": (req("GET /hello HTTP/9.9"), OK4 | {"505"}),
        "version without dot": (req("GET /hello HTTP/11"), OK4),
        "lowercase version": (req("GET /hello http/1.1"), OK4),
        "NUL in method": (req("G\x00T /hello HTTP/1.1"), OK4),
        "method with a separator": (req("GE@T /hello HTTP/1.1"), OK4),
        "unknown method": (req("BREW /hello HTTP/1.1"), EITHER),
        "control byte in path": (req("GET /hel\x01lo HTTP/1.1"), OK4),
        "space in path": (req("GET /he llo HTTP/1.1"), OK4),
        "non-ASCII path": (b"GET /h\xc3\xa9llo HTTP/1.1\r\nHost: localhost\r\n\r\n", {"4xx"}),
        "bare LF line ends": (b"GET /hello HTTP/1.1\nHost: localhost\n\n", EITHER),
        "absolute-form URI": (req("GET http://localhost/hello HTTP/1.1"), EITHER),
        "empty lines first": (b"\r\n\r\n" + req(), EITHER),
    },
    "host": {
        "HTTP/1.1 without Host": (req(host=None), OK4),
        "two Host headers": (req("GET /hello HTTP/1.1", "Host: other"), OK4),
        "port not a number": (req(host="localhost:abc"), OK4),
        "space inside Host": (req(host="local host"), OK4),
        "control byte in Host": (req(host="local\x01host"), OK4),
        "HTTP/1.0 without Host": (req("GET /hello HTTP/1.0", host=None), SERVED),
    },
    "headers": {
        "line without a colon": (req("GET /hello HTTP/1.1", "NoColonHere"), OK4),
        "space before the colon": (req("GET /hello HTTP/1.1", "X-Test : 1"), OK4),
        "empty field name": (req("GET /hello HTTP/1.1", ": value"), OK4),
        "NUL in a value": (req("GET /hello HTTP/1.1", "X-Test: a\x00b"), OK4),
        "obsolete line folding": (req("GET /hello HTTP/1.1", "X-Test: a", " b"), OK4),
        "latin-1 byte in a value": (req("GET /hello HTTP/1.1", "X-Test: caf\xe9"), EITHER),
    },
    "sizes": {
        "request line of 8 KiB": (req("GET /" + "a" * 8200 + " HTTP/1.1"), OK4),
        "request line of 70 KB": (req("GET /" + "a" * 70000 + " HTTP/1.1"), OK4),
        "header field of 9 KiB": (req("GET /hello HTTP/1.1", "X-Big: " + "b" * 9000), OK4),
        "header field of 70 KB": (req("GET /hello HTTP/1.1", "X-Big: " + "b" * 70000), OK4),
        "101 header fields": (req("GET /hello HTTP/1.1", *[f"X-H{i}: v" for i in range(101)]), OK4),
        "2000 header fields": (req("GET /hello HTTP/1.1", *[f"X-H{i}: v" for i in range(2000)]), OK4),
        # 96 fields with Host; nginx adds X-Real-IP, X-Forwarded-For and X-Forwarded-Proto: 99.
        "95 header fields": (req("GET /hello HTTP/1.1", *[f"X-H{i}: v" for i in range(95)]), SERVED),
        "header field of 8000 bytes": (req("GET /hello HTTP/1.1", "X-Big: " + "b" * 8000), SERVED),
    },
    "bodies": {
        # A worker may answer before it reads a body the view does not need (RFC 9112 9.3): then
        # the bad body closes the connection before a next request is read from it.
        "Content-Length short of the body sent": (
            req("POST /hello HTTP/1.1", "Content-Length: 20", body=b"12345"),
            EITHER,
        ),
        "Content-Length negative": (req("POST /hello HTTP/1.1", "Content-Length: -5", body=b"12345"), OK4),
        "Content-Length not a number": (req("POST /hello HTTP/1.1", "Content-Length: five", body=b"12345"), OK4),
        "Content-Length with a plus sign": (req("POST /hello HTTP/1.1", "Content-Length: +5", body=b"12345"), OK4),
        "Content-Length with an underscore": (
            req("POST /hello HTTP/1.1", "Content-Length: 1_0", body=b"0123456789"),
            OK4,
        ),
        "two different Content-Lengths": (
            req("POST /hello HTTP/1.1", "Content-Length: 5", "Content-Length: 6", body=b"123456"),
            OK4,
        ),
        "Content-Length and Transfer-Encoding": (
            req("POST /hello HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
            OK4,
        ),
        "unknown Transfer-Encoding": (req("POST /hello HTTP/1.1", "Transfer-Encoding: gzip", body=b"abc"), OK4),
        "chunked not last": (req("POST /hello HTTP/1.1", "Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), OK4),
        "chunk size not hex": (
            req("POST /hello HTTP/1.1", "Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"),
            EITHER,
        ),
        "chunk longer than its size": (
            req("POST /hello HTTP/1.1", "Transfer-Encoding: chunked", body=b"3\r\nabcdef\r\n0\r\n\r\n"),
            EITHER,
        ),
        "chunked body cut off": (req("POST /hello HTTP/1.1", "Transfer-Encoding: chunked", body=b"5\r\nab"), EITHER),
        "valid chunked body": (
            req("POST /hello HTTP/1.1", "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
            SERVED,
        ),
        "Expect: 100-continue": (
            [req("POST /hello HTTP/1.1", "Content-Length: 3", "Expect: 100-continue"), b"abc"],
            SERVED,
        ),
        "body on GET": (req("GET /hello HTTP/1.1", "Content-Length: 4", body=b"abcd"), SERVED),
    },
}

# Where nginx in front answers otherwise, by its own documented rules (the worker never sees these).
NGINX_ANSWERS: dict[str, tuple[set[str], str]] = {
    "version without dot": (OK4 | {"505"}, "nginx answers 505 HTTP Version Not Supported"),
    "unknown Transfer-Encoding": (OK4 | {"501"}, "nginx answers 501 Not Implemented (RFC 9112 6.1)"),
    "chunked not last": (OK4 | {"501"}, "nginx answers 501 Not Implemented (RFC 9112 6.1)"),
    "TE obfuscated": (OK4 | {"501"}, "nginx answers 501 Not Implemented (RFC 9112 6.1)"),
    "line without a colon": (EITHER, "nginx drops header lines it cannot parse (ignore_invalid_headers on)"),
    "HTTP/1.0 without Host": (EITHER, "nginx forwards it as HTTP/1.1 without a Host, which the worker refuses"),
}

# Requests that hide a second request where a front end would see one: the worker must
# refuse the first, never answer the hidden one.
HIDDEN = req("GET /whoami HTTP/1.1")
SMUGGLING = {
    "CL.TE": req(
        "POST /hello HTTP/1.1",
        f"Content-Length: {5 + len(HIDDEN)}",
        "Transfer-Encoding: chunked",
        body=b"0\r\n\r\n" + HIDDEN,
    ),
    "TE.CL": req(
        "POST /hello HTTP/1.1",
        "Transfer-Encoding: chunked",
        "Content-Length: 4",
        body=b"%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\n\r\n",
    ),
    "TE with a space before the colon": req(
        "POST /hello HTTP/1.1",
        f"Content-Length: {5 + len(HIDDEN)}",
        "Transfer-Encoding : chunked",
        body=b"0\r\n\r\n" + HIDDEN,
    ),
    "TE obfuscated": req(
        "POST /hello HTTP/1.1",
        f"Content-Length: {5 + len(HIDDEN)}",
        "Transfer-Encoding: xchunked",
        body=b"0\r\n\r\n" + HIDDEN,
    ),
}


# -- fixtures ------------------------------------------------------------------------------


class Target:
    """Where the bytes go (a worker, or nginx in front of it) and the worker behind it."""

    def __init__(self, server: ServeProcess, port: int, via: str) -> None:
        self.server = server
        self.port = port
        self.via = via

    def worker_pid(self) -> int:
        return next(iter(self.server.worker_pids().values()))

    def descriptors(self) -> int:
        """The worker's open descriptors, less its pool's database connections (which may grow
        up to max_size under concurrent requests and stay)."""
        pooled = sum(p.get("pool_size", 0) for p in self.server.pool_stats().values())
        return len(os.listdir(f"/proc/{self.worker_pid()}/fd")) - pooled


@pytest.fixture(scope="module")
def http_db(faultdb) -> Iterator[dict[str, Any]]:
    """A database of this module's own on the throwaway server: the workers below serve
    every test of a kind, so one database outlives a test."""
    name = f"gp_http_{uuid.uuid4().hex[:10]}"
    with faultdb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield {**faultdb.params(), "database": name}
    finally:
        with faultdb.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="module", params=SERVERS)
def worker(request, http_db, tmp_path_factory) -> Iterator[ServeProcess]:
    """One worker of each kind for the whole module: every test checks it is whole after."""
    server = ServeProcess(
        tmp_path_factory.mktemp(f"http-{request.param}"),
        http_db,
        "--keep-alive",
        str(KEEP_ALIVE),
        "--worker-connections",
        "4000",
        server=request.param,
        workers=1,
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["direct", "nginx"])
def target(request, worker, tmp_path_factory) -> Iterator[Target]:
    if request.param == "direct":
        yield Target(worker, worker.port, f"{worker.server} direct")
        return
    if worker.server == "tornado" and scaled(False, True):
        pytest.skip("the CI run puts nginx in front of the gevent worker only; the full run, of both")
    from tests.support.net import free_port

    listen = free_port()
    conf = render(
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{worker.port}",
        "--listen",
        f"127.0.0.1:{listen}",
        "--keep-alive",
        str(KEEP_ALIVE + 1),
        "--upstream-keepalive-timeout",
        str(KEEP_ALIVE),
        "--client-timeout",
        str(KEEP_ALIVE),
    )
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), conf).start(port=listen)
    try:
        yield Target(worker, listen, f"{worker.server} via nginx")
    finally:
        nginx.stop()


# -- checks ----------------------------------------------------------------------------------


def healthy_after(target: Target, fds_before: int, rss_before: int | None) -> None:
    """The worker serves, holds no connection, and has let go of every socket of the batch;
    its RSS grew less than 20 MiB over ``rss_before`` (None: not checked)."""
    status, _, body = target.server.get("/read")
    assert status == 200, body[:500]
    deadline = time.monotonic() + 10
    while True:
        pools = target.server.pool_stats()
        in_use = sum(p.get("pool_in_use", 0) for p in pools.values())
        fds = target.descriptors()
        if (in_use == 0 and fds <= fds_before) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert in_use == 0, pools
    assert fds <= fds_before, f"{fds} descriptors open in the worker after the batch, {fds_before} before"
    rss = rss_kib(target.worker_pid())
    if rss_before is not None:
        assert rss - rss_before < 20 * 1024, f"worker RSS grew {rss - rss_before} KiB over the batch"
    log = target.server.log()
    assert "Traceback" not in log, log[-4000:]


def baseline(target: Target) -> tuple[int, int]:
    for _ in range(3):  # warm the app, the pool and the worker's own buffers
        assert target.server.get("/read")[0] == 200
    time.sleep(0.2)
    return target.descriptors(), rss_kib(target.worker_pid())


def run_cases(port: int, cases: dict[str, tuple[Any, set[str]]]) -> dict[str, rawhttp.Outcome]:
    with ThreadPoolExecutor(max_workers=min(32, len(cases))) as pool:
        futures = {
            name: pool.submit(rawhttp.exchange, port, data, deadline=KEEP_ALIVE + 6)
            for name, (data, _) in cases.items()
        }
        return {name: future.result() for name, future in futures.items()}


def record(entry: dict[str, Any]) -> None:
    print(json.dumps(entry))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}) + "\n")


def allowed_for(target: Target, name: str, allowed: set[str]) -> set[str]:
    if target.via.endswith("via nginx") and name in NGINX_ANSWERS:
        return NGINX_ANSWERS[name][0]
    return allowed


def judge(target: Target, cases: dict[str, tuple[Any, set[str]]], outcomes: dict[str, rawhttp.Outcome]) -> list[str]:
    wrong = []
    for name, (_, allowed) in cases.items():
        allowed = allowed_for(target, name, allowed)
        outcome = outcomes[name]
        kind = outcome.kind()
        first = str(outcome.statuses[0]) if outcome.statuses else kind
        if kind not in allowed and first not in allowed:
            wrong.append(f"{name}: {kind} {outcome.statuses} ended {outcome.ended} (allowed {sorted(allowed)})")
    return wrong


# -- the classes -------------------------------------------------------------------------------


@pytest.mark.parametrize("klass", list(CASES))
def test_malformed_requests_get_a_4xx_or_a_close_and_the_worker_stays_whole(target, klass):
    fds, rss = baseline(target)
    cases = CASES[klass]
    outcomes = run_cases(target.port, cases)
    record(
        {
            "test": "http-input",
            "target": target.via,
            "class": klass,
            "cases": len(cases),
            "outcomes": {name: [o.kind(), o.statuses, o.ended] for name, o in outcomes.items()},
        }
    )
    wrong = judge(target, cases, outcomes)
    assert not wrong, "\n".join(wrong)
    healthy_after(target, fds, rss)


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_a_request_hidden_in_a_body_is_never_answered(target, name):
    fds, rss = baseline(target)
    outcome = rawhttp.exchange(target.port, SMUGGLING[name], deadline=KEEP_ALIVE + 6)
    record(
        {
            "test": "http-smuggling",
            "target": target.via,
            "case": name,
            "statuses": outcome.statuses,
            "ended": outcome.ended,
        }
    )
    allowed = allowed_for(target, name, OK4)
    assert outcome.kind() in allowed or str(outcome.statuses[:1][0] if outcome.statuses else "") in allowed, (
        outcome.statuses,
        outcome.ended,
    )
    assert len(outcome.responses) <= 1, f"two answers to one request: {outcome.statuses}"
    assert all(b'"remote_addr"' not in r.body for r in outcome.responses)  # /whoami's answer
    healthy_after(target, fds, rss)


def test_pipelined_requests_are_answered_in_order(target):
    outcome = rawhttp.exchange(
        target.port,
        req("GET /hello HTTP/1.1") + req("GET /read HTTP/1.1") + req("GET /hello HTTP/1.1", "Connection: close"),
    )
    assert outcome.statuses == [200, 200, 200], outcome
    assert outcome.responses[0].body == b"hello\n" and b"items" in outcome.responses[1].body


def test_a_half_closed_client_gets_its_answer_or_a_close(target):
    # gevent.pywsgi answers; Tornado and nginx take the FIN for a client that went away
    # (nginx logs 499) and close. Either way nothing hangs and nothing leaks.
    fds, rss = baseline(target)
    outcome = rawhttp.exchange(target.port, req("GET /read HTTP/1.1"), half_close=True)
    assert outcome.kind() in ("2xx", "close"), outcome
    healthy_after(target, fds, rss)


def test_clients_that_reset_mid_response_leak_nothing(target):
    fds, rss = baseline(target)
    for i in range(scaled(40, 10)):
        rawhttp.reset_after_sending(target.port, req("GET /slow?s=0.05 HTTP/1.1"), wait=0.01 * (i % 8))
    healthy_after(target, fds, rss)


# -- the generative part ---------------------------------------------------------------------------

SEEDS = [
    req("GET /hello HTTP/1.1", "Accept: */*"),
    req("POST /hello HTTP/1.1", "Content-Length: 3", body=b"abc"),
    req("POST /hello HTTP/1.1", "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
    req("GET /read?x=1 HTTP/1.0", host=None),
]
INTERESTING = [
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b":",
    b"\t",
    b"\xff",
    b"%",
    b"0",
    b"-1",
    b"chunked",
    b"Content-Length: 1\r\n",
    b"Host: a\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"HTTP/1.1",
    b"9" * 12,
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three edits: flip, insert, delete, duplicate a span, or splice an interesting token."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(out) + 1)
        op = rng.randrange(5)
        if op == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[at:at] = rng.choice(INTERESTING)
        elif op == 2 and out:
            del out[at : at + rng.randint(1, 8)]
        elif op == 3 and out:
            span = out[at : at + rng.randint(1, 40)]
            out[at:at] = span * rng.randint(2, 50)
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
    return bytes(out)


def fuzz_cases() -> int:
    override = os.environ.get("GREENPOOL_HTTP_FUZZ_CASES")
    return int(override) if override else scaled(2000, 200)


def test_seeded_mutations_of_valid_requests_never_get_a_5xx_or_hang(worker):
    server, kind = worker, worker.server
    target = Target(server, server.port, f"{kind} direct")
    fds, rss = baseline(target)
    seed = int(os.environ.get("GREENPOOL_HTTP_FUZZ_SEED", "20261207"))
    rng = random.Random(seed)
    total = fuzz_cases()
    cases = {f"m{i}": (mutate(rng, rng.choice(SEEDS)), EITHER | {"505"}) for i in range(total)}
    outcomes = {}
    names = list(cases)
    for start in range(0, total, 100):  # 100 sockets at a time
        outcomes.update(run_cases(server.port, {n: cases[n] for n in names[start : start + 100]}))
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome.kind()] = counts.get(outcome.kind(), 0) + 1
    record({"test": "http-fuzz", "target": target.via, "seed": seed, "cases": total, "outcomes": counts})
    bad = {n: (o.kind(), o.statuses, cases[n][0][:200]) for n, o in outcomes.items() if o.kind() in ("5xx", "hang")}
    assert not bad, bad
    healthy_after(target, fds, rss)


# -- slow clients at scale ----------------------------------------------------------------------


def _good_latencies(server: ServeProcess, seconds: float, limit: int = 2000) -> tuple[list[float], int]:
    """Back-to-back GET /read for ``seconds`` (at most ``limit``): latencies, failures."""
    latencies, failed = [], 0
    stop = time.monotonic() + seconds
    while time.monotonic() < stop and len(latencies) + failed < limit:
        try:
            took, status, _, _ = server.timed_get("/read", timeout=10)
        except OSError:
            failed += 1
            continue
        if status == 200:
            latencies.append(took)
        else:
            failed += 1
    return latencies, failed


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def _slow_round(server: ServeProcess, idle_count: int, slow_count: int) -> dict[str, Any]:
    """Idle keep-alive clients and slowloris clients held against the worker while a good
    client sends GET /read back to back; then everything is closed."""
    idle: list[socket.socket] = []
    slow: list[socket.socket] = []
    try:
        for _ in range(idle_count):  # one request each, then idle on keep-alive
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(req())
            idle.append(sock)
        for sock in idle:
            assert b" 200 " in sock.recv(65536)[:16]
        for _ in range(slow_count):  # a request line, then a header line per second, never the end
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n")
            slow.append(sock)
        latencies, failed = _good_latencies(server, KEEP_ALIVE + 1)
        dripping_until = time.monotonic() + KEEP_ALIVE + 6
        open_slow = list(slow)
        while open_slow and time.monotonic() < dripping_until:
            still = []
            for sock in open_slow:
                try:
                    sock.sendall(b"X-Drip: 1\r\n")
                    still.append(sock)
                except OSError:  # the worker closed it: what we wait for
                    pass
            open_slow = still
            time.sleep(1.0)
    finally:
        for sock in idle + slow:
            sock.close()
    return {"latencies": latencies, "failed": failed, "cut": len(slow) - len(open_slow)}


@pytest.mark.parametrize("kind", SERVERS)
def test_idle_and_slowloris_clients_by_the_thousand_do_not_starve_good_clients(serve, kind):
    server = serve("--keep-alive", str(KEEP_ALIVE + 2), "--worker-connections", "6000", server=kind, workers=1)
    target = Target(server, server.port, f"{kind} direct")
    fds, rss = baseline(target)
    unloaded, _ = _good_latencies(server, 1.5, limit=200)
    idle_count, slow_count = scaled(3000, 500), scaled(1000, 100)
    # Two rounds: holding thousands of connections raises the worker's RSS once (greenlet
    # stacks, buffers; freed memory stays with the process). A leak grows it again in round 2.
    rounds, rss_after = [], []
    for _ in range(2):
        rounds.append(_slow_round(server, idle_count, slow_count))
        healthy_after(target, fds, rss_after[-1] if rss_after else None)
        rss_after.append(rss_kib(target.worker_pid()))
    latencies = [t for r in rounds for t in r["latencies"]]
    record(
        {
            "test": "http-slow-clients",
            "target": target.via,
            "idle": idle_count,
            "slowloris": slow_count,
            "rounds": len(rounds),
            "slowloris_cut_by_the_worker": [r["cut"] for r in rounds],
            "good_requests": len(latencies),
            "good_failed": sum(r["failed"] for r in rounds),
            "good_median_ms_unloaded": round(1000 * _median(unloaded), 2),
            "good_median_ms_loaded": round(1000 * _median(latencies), 2),
            "good_p99_ms_loaded": round(1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2),
            "rss_kib": {"before": rss, "after_round_1": rss_after[0], "after_round_2": rss_after[1]},
        }
    )
    assert all(r["failed"] == 0 and r["latencies"] for r in rounds)
    assert all(r["cut"] == slow_count for r in rounds), "slowloris connections still open after the header limit"
