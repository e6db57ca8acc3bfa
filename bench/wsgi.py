"""WSGI entry point of the benchmark's Django stacks (bench.django_settings).

The settings module does the PyMySQL aliasing for the non-greenpool backends,
so this is Django's usual wsgi.py.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_settings")

application = get_wsgi_application()
