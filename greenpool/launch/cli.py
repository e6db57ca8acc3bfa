"""``greenpool-serve``: the command line entry point."""

from __future__ import annotations

import sys

from greenpool.launch import config as config_module
from greenpool.launch import logs
from greenpool.launch.errors import ExitCode, LaunchError

SUBCOMMANDS = ("stats", "nginx-config")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "stats":
        from greenpool.launch import stats

        return stats.main(args[1:])
    if args and args[0] == "nginx-config":
        from greenpool.launch import nginx

        return nginx.main(args[1:])
    try:
        config, _ = config_module.parse_args(args)
    except LaunchError as exc:
        print(f"{config_module.PROG}: error: {exc.message}", file=sys.stderr)
        return int(exc.code)
    if config.print_config:
        print(config_module.format_config(config))
        return int(ExitCode.OK)

    from greenpool.launch.master import Master

    try:
        _check_log_files(config.values)
    except LaunchError as exc:
        print(f"{config_module.PROG}: error: {exc.message}", file=sys.stderr)
        return int(exc.code)
    logs.setup_logging(config.values, "master")
    master = Master(config)
    if config.check_config:
        return master.check()
    return master.run()


def _check_log_files(values: dict) -> None:
    """Open each log file once (the master and every worker append to it), so a
    missing directory is one line naming the flag, not a traceback."""
    for flag, name in (("--error-logfile", "error_logfile"), ("--access-logfile", "access_logfile")):
        path = values.get(name)
        if path and path != "-":
            try:
                with open(path, "a"):
                    pass
            except OSError as exc:
                raise LaunchError(ExitCode.USAGE, f"{flag} {path}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    sys.exit(main())
