"""``python -m greenpool.demo.prepare``: migrate and seed the demo database.

greenpool-serve runs this once in a child process before it starts workers,
so workers never race on migrations and the master holds no connection.
Exit codes follow greenpool.launch.errors.ExitCode: 0, 3 (CONFIG_ERROR) for
bad settings (a refused login, an unknown database or host name included),
6 (DATABASE_UNAVAILABLE) when the server does not answer.
"""

import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "greenpool.demo.settings")
    from greenpool.launch.errors import ExitCode
    from greenpool.mysql_errors import permanent_connect_error, unavailable_cause

    try:
        import django
        from django.core.exceptions import ImproperlyConfigured

        django.setup()
    except Exception as exc:
        print(f"demo settings are invalid: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)

    from django.core.management import call_command
    from django.db import OperationalError, connections

    from greenpool import registry
    from greenpool.launch.databases import describe_db

    try:
        call_command("migrate", verbosity=0, interactive=False)
        call_command("seed", verbosity=0)
    except ImproperlyConfigured as exc:
        print(f"demo settings are invalid: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    except OperationalError as exc:
        where = describe_db(connections["default"].settings_dict)
        permanent = permanent_connect_error(exc)
        if permanent is not None:
            # A wrong password, an unknown database or host: waiting will not help.
            print(
                f"the demo database {where} cannot be used: {permanent}; check GREENPOOL_MYSQL_USER, "
                "_PASSWORD, _DATABASE and _HOST: waiting will not help",
                file=sys.stderr,
            )
            return int(ExitCode.CONFIG_ERROR)
        if unavailable_cause(exc) is None:
            raise
        print(f"the demo database {where} does not answer: {exc}", file=sys.stderr)
        return int(ExitCode.DATABASE_UNAVAILABLE)
    finally:
        connections.close_all()
        registry.close_all(timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
