"""/metrics as a Django view, for processes greenpool-serve does not run
(gunicorn, uWSGI, manage.py runserver; Celery workers through the spool).

    # urls.py -- route it where only Prometheus can reach it
    from greenpool.django_metrics import metrics_view
    urlpatterns += [path("metrics", metrics_view)]

Without GREENPOOL_METRICS_DIR the answer is the process that served the
scrape. With it set to one directory for every process of the host (gunicorn
or uWSGI workers, Celery's children), each process writes its snapshot there
every few seconds (greenpool.metrics.start_spool_writer) and the view answers
for all of them, each labelled by pid.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse

from greenpool import metrics


def metrics_view(request: HttpRequest) -> HttpResponse:
    directory = os.environ.get(metrics.SPOOL_ENV)
    if directory:
        collector = metrics.Collector(lambda: metrics.read_spool(directory))
    else:
        collector = metrics.Collector(lambda: [({}, metrics.snapshot())])
    body, content_type = metrics.render(
        collector, openmetrics="application/openmetrics-text" in request.headers.get("Accept", "")
    )
    return HttpResponse(body, content_type=content_type)
