"""greenpool-serve: Django (or any WSGI app) under gevent or Tornado, in
supervised worker processes that each own bounded MySQL connection pools.

Modules: config (every setting, declared once), master (supervision),
worker (what both worker types share), worker_gevent, worker_tornado,
stats (the `greenpool-serve stats` command), sockets, errors (exit codes),
loadgen (a small HTTP client for smoke and load checks).
"""
