"""`greenpool-serve nginx-config`: what it renders, what it refuses, and that a
real nginx accepts the result (`nginx -t`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from greenpool.launch import nginx as nginx_module
from greenpool.launch.errors import ExitCode
from tests.support.nginx import Nginx, render

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "nginx" / "example.conf"
EXAMPLE_ARGS = [
    "--workers",
    "4",
    "--worker-ports",
    "--bind",
    "0.0.0.0:8001",
    "--upstream-host",
    "198.51.100.11",
    "--upstream-host",
    "198.51.100.12",
    "--listen",
    "80",
    "--server-name",
    "example.com,www.example.com",
]


def directives(text: str) -> list[str]:
    """The configuration without comments and blank lines (no directive value here holds a #)."""
    return [code for code in (line.split("#", 1)[0].strip() for line in text.splitlines()) if code]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "greenpool.launch", "nginx-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_one_upstream_server_per_worker_port_with_failure_limits():
    text = render(
        "-w", "3", "--worker-ports", "-b", "127.0.0.1:8001", "--max-fails", "2", "--fail-timeout", "5", standalone=False
    )
    servers = [d for d in directives(text) if d.startswith("server ") and d.endswith(";")]
    assert servers == [f"server 127.0.0.1:{p} max_fails=2 fail_timeout=5s;" for p in (8001, 8002, 8003)]


def test_a_shared_socket_is_one_server_per_host_and_a_wildcard_bind_is_reached_on_loopback():
    text = render("-w", "4", "-b", "0.0.0.0:9000", standalone=False)
    assert [d for d in directives(text) if d.startswith("server 1")] == [
        "server 127.0.0.1:9000 max_fails=3 fail_timeout=10s;"
    ]
    text = render("-w", "2", "--worker-ports", "-b", "[::]:9000", standalone=False)
    assert "server [::1]:9001 max_fails=3 fail_timeout=10s;" in directives(text)


def test_every_upstream_host_gets_every_worker_port():
    text = render(
        "-w",
        "2",
        "--worker-ports",
        "-b",
        "0.0.0.0:8001",
        "--upstream-host",
        "10.1.0.2,10.1.0.3",
        "--upstream-host",
        "fd00::7",
        standalone=False,
    )
    servers = [d.split()[1] for d in directives(text) if d.startswith("server ") and d.endswith(";")]
    assert servers == [
        "10.1.0.2:8001",
        "10.1.0.2:8002",
        "10.1.0.3:8001",
        "10.1.0.3:8002",
        "[fd00::7]:8001",
        "[fd00::7]:8002",
    ]


def test_unix_socket_workers(tmp_path):
    path = tmp_path / "gp.sock"
    text = render("-w", "2", "--worker-ports", "-b", f"unix:{path}", standalone=False)
    servers = [d.split()[1] for d in directives(text) if d.startswith("server ") and d.endswith(";")]
    assert servers == [f"unix:{path}.0", f"unix:{path}.1"]


def test_the_directives_the_deployment_relies_on():
    text = render("-w", "2", "--worker-ports", "-b", "127.0.0.1:8001", "--keep-alive", "75", standalone=False)
    lines = directives(text)
    upstream = lines[lines.index("upstream greenpool {") :]
    upstream = upstream[: upstream.index("}")]
    assert upstream[1:3] == ["zone greenpool 64k;", "least_conn;"]  # before keepalive, as nginx requires
    assert "keepalive 16;" in upstream and "keepalive_timeout 60s;" in upstream
    location = lines[lines.index("location / {") :]
    for expected in (
        "proxy_pass http://greenpool;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_next_upstream error;",
        "proxy_connect_timeout 2s;",
        "proxy_read_timeout 60s;",
    ):
        assert expected in location, expected
    # Connection errors only: never timeouts, never a replay of a POST that was sent.
    assert [d for d in lines if d.startswith("proxy_next_upstream")] == ["proxy_next_upstream error;"]
    assert "non_idempotent" not in " ".join(lines)
    assert "client_max_body_size 10m;" in lines
    assert "listen 127.0.0.1:8080;" in lines and "server_name _;" in lines


def test_every_directive_group_says_why():
    """Each group of directives in the template (after a blank line or an opening
    brace) starts with a comment; only a block's obvious first line is exempt."""
    lines = [line.strip() for line in nginx_module.SITE_TEMPLATE.read_text().splitlines()]
    for number, (previous, line) in enumerate(zip([""] + lines, lines), 1):
        if not line or line.startswith(("#", "'")) or line == "}" or line.endswith("{"):
            continue
        if (not previous or previous.endswith("{")) and not line.startswith(("listen ", "proxy_pass ")):
            raise AssertionError(f"greenpool.conf.template:{number}: {line!r} has no comment above it")


def test_upstream_keepalive_timeout_must_be_shorter_than_the_workers_keep_alive():
    proc = cli("--keep-alive", "30")
    assert proc.returncode == ExitCode.USAGE
    assert "--upstream-keepalive-timeout (60s) must be shorter than --keep-alive (30s)" in proc.stderr
    assert cli("--keep-alive", "30", "--upstream-keepalive-timeout", "20").returncode == 0


def test_upstream_hosts_need_a_tcp_bind():
    proc = cli("-b", "unix:/tmp/gp.sock", "--upstream-host", "10.1.0.2")
    assert proc.returncode == ExitCode.USAGE and "needs a TCP --bind" in proc.stderr


def test_bad_values_name_the_setting():
    proc = cli("--client-max-body-size", "lots")
    assert proc.returncode == ExitCode.USAGE and "nginx size" in proc.stderr
    proc = cli("--upstream-host", "not a host!")
    assert proc.returncode == ExitCode.USAGE
    assert "argument --upstream-host: 'host!' is not an IP address or a host name" in proc.stderr, proc.stderr


def test_reads_the_servers_config_file_and_environment(tmp_path):
    conf = tmp_path / "gp.conf.py"
    # One file for both commands: greenpool-serve ignores the nginx_* names, nginx-config
    # ignores the server-only ones (threads).
    conf.write_text(
        "workers = 2\nworker_ports = True\nbind = ['127.0.0.1:7001']\nthreads = 4\nnginx_listen = '127.0.0.1:7080'\n"
    )
    proc = cli("-c", str(conf), env={"GREENPOOL_NGINX_CLIENT_MAX_BODY_SIZE": "1m", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    lines = directives(proc.stdout)
    assert "server 127.0.0.1:7002 max_fails=3 fail_timeout=10s;" in lines
    assert "listen 127.0.0.1:7080;" in lines and "client_max_body_size 1m;" in lines
    serve = subprocess.run(
        [sys.executable, "-m", "greenpool.launch", "-c", str(conf), "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 0, serve.stderr
    assert "nginx_listen" not in serve.stdout and "threads" in serve.stdout


def test_output_file_is_written(tmp_path):
    out = tmp_path / "greenpool.conf"
    proc = cli("--standalone", "-o", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    assert out.read_text().startswith("# A complete nginx.conf")


def test_nginx_example_is_current():
    assert EXAMPLE.read_text() == render(*EXAMPLE_ARGS, standalone=False), (
        "nginx/example.conf is out of date: greenpool-serve nginx-config "
        + " ".join(EXAMPLE_ARGS)
        + " > nginx/example.conf"
    )


# -- nginx -t ---------------------------------------------------------------------------

SHAPES = {
    "worker ports": ["-w", "2", "--worker-ports", "-b", "127.0.0.1:8001"],
    "shared port": ["-w", "4", "-b", "0.0.0.0:8001"],
    "unix sockets": ["-w", "2", "--worker-ports", "-b", "unix:/tmp/greenpool-nginx-test.sock"],
    "two hosts, ipv6 listen": [
        "-w",
        "2",
        "--worker-ports",
        "-b",
        "0.0.0.0:8001",
        "--upstream-host",
        "10.1.0.2",
        "--upstream-host",
        "fd00::7",
        "--listen",
        "[::1]:18080",
    ],
    "short timeouts": [
        "--keep-alive",
        "2",
        "--upstream-keepalive-timeout",
        "1.5",
        "--connect-timeout",
        "0.5",
        "--read-timeout",
        "5",
        "--client-max-body-size",
        "0",
    ],
}


@pytest.mark.nginx
@pytest.mark.parametrize("shape", list(SHAPES))
def test_nginx_accepts_the_standalone_config(tmp_path, shape):
    output = Nginx(tmp_path / "nginx", render(*SHAPES[shape])).check()
    print(output)
    assert "syntax is ok" in output and "test is successful" in output


@pytest.mark.nginx
def test_nginx_accepts_the_site_config_included_in_an_http_block(tmp_path):
    """The default output is meant for /etc/nginx/conf.d/: include it the way Debian's
    nginx.conf does (here in a main file of the test's own)."""
    site = tmp_path / "greenpool.conf"
    site.write_text(render(*EXAMPLE_ARGS, standalone=False))
    main = (
        "pid nginx.pid;\nerror_log logs/error.log;\nevents {}\nhttp {\n"
        "    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;\n"
        "    uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n"
        f"    access_log logs/access.log;\n    include {site};\n}}\n"
    )
    output = Nginx(tmp_path / "nginx", main).check()
    assert "test is successful" in output


def test_fill_refuses_placeholders_without_values_and_values_without_placeholders():
    with pytest.raises(ValueError, match=r"\['b'\] have no value"):
        nginx_module.fill("{{a}} {{b}}", {"a": "1"})
    with pytest.raises(ValueError, match=r"values \['c'\] are unused"):
        nginx_module.fill("{{a}}", {"a": "1", "c": "2"})
    assert nginx_module.fill("x {\n    {{lines}}\n}", {"lines": "a;\nb;"}) == "x {\n    a;\n    b;\n}"
    assert nginx_module.duration(1.5) == "1500ms" and nginx_module.duration(60) == "60s"


def test_example_keeps_its_comments():
    text = EXAMPLE.read_text()
    assert re.search(r"keepalive_timeout 60s;", text)
    assert "shorter than\n    # greenpool-serve's --keep-alive (75s)" in text


def test_output_that_cannot_be_written_fails_naming_it_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "conf.d"
    out.mkdir()  # a directory where the file should go: os.replace refuses
    proc = cli("-o", str(out))
    assert proc.returncode == ExitCode.FAILURE, proc.stderr
    assert f"nginx-config: error: cannot write {out}: " in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.d"], "the temporary file was removed"
