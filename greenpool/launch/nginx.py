"""``greenpool-serve nginx-config``: the nginx configuration in front of the workers.

It reads the launcher's own settings (--bind, --workers, --worker-ports,
--keep-alive, or the same --config file) plus the nginx ones declared in
config.NGINX_SETTINGS, and fills nginx_templates/greenpool.conf.template: an
upstream with one server per worker and per app host, and a server block that
proxies to it. ``--standalone`` wraps that in a complete nginx.conf whose paths
are all relative to nginx's ``-p`` prefix (used by ``make run`` and the tests).

    greenpool-serve nginx-config -w 4 --worker-ports -b 127.0.0.1:8001 > /etc/nginx/conf.d/greenpool.conf
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from greenpool.launch import config as config_module
from greenpool.launch.errors import ExitCode, LaunchError
from greenpool.launch.sockets import Address, parse_address

TEMPLATE_DIR = Path(__file__).with_name("nginx_templates")
SITE_TEMPLATE = TEMPLATE_DIR / "greenpool.conf.template"
STANDALONE_TEMPLATE = TEMPLATE_DIR / "standalone.conf.template"

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_ALONE_ON_LINE = re.compile(r"^([ \t]*)\{\{\s*(\w+)\s*\}\}[ \t]*$", re.M)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace each ``{{name}}``. A placeholder alone on its line may stand for
    several lines, each indented like it. A name without a value, or a value
    that no placeholder uses, is an error (a template and its renderer out of step)."""
    used = set(_PLACEHOLDER.findall(template))
    missing = used - values.keys()
    unused = values.keys() - used
    if missing or unused:
        raise ValueError(f"template placeholders {sorted(missing)} have no value; values {sorted(unused)} are unused")

    def block(match: re.Match[str]) -> str:
        indent = match.group(1)
        return "\n".join(indent + line if line else "" for line in values[match.group(2)].splitlines())

    text = _ALONE_ON_LINE.sub(block, template)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def duration(seconds: float) -> str:
    """An nginx time: 60s, 1500ms."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _listen_directive(address: Address) -> str:
    if address.kind == "unix":
        return f"unix:{address.path}"
    if not address.host:
        return str(address.port)
    return str(address)


def _local_host(host: str) -> str:
    """Where nginx on the same machine reaches a --bind host."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def upstream_servers(config: config_module.Config) -> list[tuple[str, str]]:
    """(nginx server address, what it is) for each worker on each app host."""
    address = config.addresses[0]
    hosts: list[str] = list(config.nginx_upstream_hosts)
    workers = config.workers if config.worker_ports else 1
    if address.kind == "unix":
        if hosts:
            raise LaunchError(
                ExitCode.USAGE,
                f"--upstream-host needs a TCP --bind: {address} is a unix socket, "
                "which only nginx on the same machine can reach",
            )
        if config.worker_ports:
            return [(f"unix:{address.for_worker(i).path}", f"worker {i}") for i in range(workers)]
        return [(f"unix:{address.path}", f"the {config.workers} workers' shared socket")]
    if config.worker_ports and address.port == 0:
        raise LaunchError(ExitCode.USAGE, "--worker-ports needs a fixed --bind port (worker i listens on port + i)")
    if address.port == 0:
        raise LaunchError(ExitCode.USAGE, f"--bind {address}: nginx needs a fixed port, not 0")
    servers = []
    for host in hosts or [_local_host(address.host)]:
        for i in range(workers):
            where = str(Address("tcp", host=host, port=address.port + i))
            what = f"worker {i}" if config.worker_ports else f"the {config.workers} workers' shared port"
            servers.append((where, f"host {host}, {what}" if hosts else what))
    return servers


def check(config: config_module.Config) -> None:
    """The rules the template's comments promise; LaunchError(USAGE) names the broken one."""
    if config.nginx_upstream_keepalive_timeout >= config.keep_alive:
        raise LaunchError(
            ExitCode.USAGE,
            f"--upstream-keepalive-timeout ({config.nginx_upstream_keepalive_timeout:g}s) must be shorter than "
            f"--keep-alive ({config.keep_alive:g}s): otherwise a worker may close an idle connection just as nginx "
            "sends a request on it, and a POST on it fails with 502",
        )


def site_values(config: config_module.Config) -> dict[str, str]:
    check(config)
    servers = upstream_servers(config)
    fail = f" max_fails={config.nginx_max_fails} fail_timeout={duration(config.nginx_fail_timeout)}"
    width = max(len(f"server {where}{fail};") for where, _ in servers)
    lines = [f"{f'server {where}{fail};':<{width}}  # {what}" for where, what in servers]
    hosts = len(config.nginx_upstream_hosts) or 1
    per_host = f"{config.workers} workers" + (
        " on ports of their own" if config.worker_ports else " on one shared port"
    )
    summary = (
        f"{hosts} app host(s) x {per_host} (--bind {config.addresses[0]}), "
        f"greenpool-serve --keep-alive {config.keep_alive:g}s"
    )
    return {
        "summary": summary,
        "upstream_servers": "\n".join(lines),
        "keepalive": str(config.nginx_upstream_keepalive),
        "keepalive_timeout": duration(config.nginx_upstream_keepalive_timeout),
        "keep_alive": duration(config.keep_alive),
        "listen": _listen_directive(parse_address(config.nginx_listen)),
        "server_name": " ".join(config.nginx_server_name),
        "client_max_body_size": config.nginx_client_max_body_size,
        "client_timeout": duration(config.nginx_client_timeout),
        "connect_timeout": duration(config.nginx_connect_timeout),
        "read_timeout": duration(config.nginx_read_timeout),
    }


def render(config: config_module.Config, standalone: bool = False) -> str:
    """The nginx configuration for ``config`` (a Config resolved for "nginx-config")."""
    site = fill(SITE_TEMPLATE.read_text(), site_values(config))
    if not standalone:
        return site
    return fill(STANDALONE_TEMPLATE.read_text(), {"site": site.rstrip("\n")})


def resolve(argv: list[str], environ: dict[str, str] | None = None) -> tuple[config_module.Config, Any]:
    return config_module.parse_args(argv, environ, command="nginx-config")


# -- running nginx from a prefix of our own (make run, the tests) ------------------


def find_nginx() -> str | None:
    """The nginx binary: $NGINX, else PATH, else the usual sbin directories."""
    explicit = os.environ.get("NGINX")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    path = (
        os.environ.get("PATH", "")
        + os.pathsep
        + os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"])
    )
    return shutil.which("nginx", path=path)


def prepare_prefix(prefix: str | os.PathLike[str]) -> Path:
    """Make PREFIX/logs and PREFIX/tmp, which the standalone config writes to."""
    root = Path(prefix).resolve()
    for sub in ("logs", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def nginx_command(nginx: str, prefix: str | os.PathLike[str], conf: str | os.PathLike[str], *extra: str) -> list[str]:
    """``nginx -p PREFIX -c CONF -e logs/error.log ...``: -e (nginx 1.19.5+) keeps even the
    messages from before the configuration is read out of the compiled-in log path."""
    cmd = [nginx, "-p", f"{Path(prefix).resolve()}/", "-c", str(Path(conf).resolve())]
    if _nginx_version(nginx) >= (1, 19, 5):
        cmd += ["-e", "logs/error.log"]
    return cmd + list(extra)


def _nginx_version(nginx: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else (0,)


def syntax_check(nginx: str, prefix: str | os.PathLike[str], conf: str | os.PathLike[str]) -> tuple[bool, str]:
    """``nginx -t`` on CONF with PREFIX: (ok, nginx's output)."""
    proc = subprocess.run(
        nginx_command(nginx, prefix, conf, "-t"), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # open() itself failed: nothing to remove
            os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    try:
        config, namespace = resolve(argv)
        text = render(config, standalone=getattr(namespace, "standalone", False))
    except LaunchError as exc:
        print(f"{config_module.PROG} nginx-config: error: {exc.message}", file=sys.stderr)
        return int(exc.code)
    output = getattr(namespace, "output", None)
    if output and output != "-":
        try:
            write_atomically(output, text)
        except OSError as exc:
            print(f"{config_module.PROG} nginx-config: error: cannot write {output}: {exc}", file=sys.stderr)
            return int(ExitCode.FAILURE)
    else:
        sys.stdout.write(text)
    return int(ExitCode.OK)
