"""nginx in front of greenpool-serve for the benchmark, from a prefix of its own.

The config comes from ``greenpool-serve nginx-config --standalone`` (the
project's own template, what users deploy) when that subcommand exists, else
from bench/nginx.conf.template (least_conn over one upstream server per
worker, upstream keepalive 32). Either way nginx runs as
``nginx -p PREFIX -c PREFIX/nginx.conf -g 'daemon off;'`` under the stack's
temporary directory: never the system service, its config or its logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf.template"

# How the last write() made its config: "greenpool-serve nginx-config --standalone" or the fallback.
last_source: dict[str, str] = {}


def find_nginx() -> str | None:
    explicit = os.environ.get("NGINX")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin"
    return shutil.which("nginx", path=path)


def _prefix(workdir: Path) -> Path:
    prefix = workdir / "nginx"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return prefix


def _from_greenpool(app_port: int, workers: int, listen_port: int, out: Path) -> list[str] | None:
    """Render with the project's generator; None if it is not there (or fails)."""
    argv = [
        str(Path(sys.executable).parent / "greenpool-serve"),
        "nginx-config",
        "--standalone",
        "-w",
        str(workers),
        "--worker-ports",
        "-b",
        f"127.0.0.1:{app_port}",
        "--listen",
        f"127.0.0.1:{listen_port}",
        "-o",
        str(out),
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not out.exists():
        return None
    return argv


def write(workdir: Path, *, app_port: int, workers: int, listen_port: int) -> Path:
    prefix = _prefix(workdir)
    conf = prefix / "nginx.conf"
    argv = _from_greenpool(app_port, workers, listen_port, conf)
    if argv is not None:
        shown = ["greenpool-serve", *argv[1:-2], "-o", "PREFIX/nginx.conf"]
        last_source.update(source="greenpool-serve nginx-config --standalone", command=" ".join(shown))
        return conf
    servers = "\n".join(f"        server 127.0.0.1:{app_port + i};" for i in range(workers))
    text = TEMPLATE.read_text().replace("{servers}", servers).replace("{listen}", f"127.0.0.1:{listen_port}")
    conf.write_text(text)
    last_source.update(
        source="bench/nginx.conf.template (greenpool-serve nginx-config not available)",
        command="bench/nginx.conf.template",
    )
    return conf


def command(workdir: Path, conf: Path) -> list[str]:
    nginx = find_nginx() or "nginx"
    prefix = _prefix(workdir)
    return [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", "logs/error.log", "-g", "daemon off;"]
