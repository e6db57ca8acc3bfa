"""Reusable helpers for greenpool's tests: real MariaDB servers, ports and a faulty network.

- ``mysqlenv``: the MySQL server the suite uses (GREENPOOL_MYSQL_* variables).
- ``mariadb``: ``ThrowawayMariaDB``, a private mariadbd a test may stop, kill and restart.
- ``net``: ``free_port()`` and ``wait_for_port()``.
- ``proxy``: ``TCPProxy``, a TCP relay that can stall or cut its connections.
"""
