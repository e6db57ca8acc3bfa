"""The bundled demo site: a small Django project that `greenpool-serve` serves
when it is given no APP and no DJANGO_SETTINGS_MODULE.

Endpoints (shared by the quickstart, the tests and the benchmark):
/hello (no database), /read (three primary-key reads through the ORM),
/tx (a short transaction), /slow (SELECT SLEEP), /whoami, /healthz.
"""
