"""A small Celery + Django project on greenpool.backends.mysql, run as a real
worker process by tests/test_celery.py and bench/celery_tasks.py
(tests/support/celery_worker.py starts it)."""
