"""The demo's endpoints. Each is small on purpose: they measure the server
and the pool, not the application."""

import os
import random

from django.db import connection, transaction
from django.db.models import F
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse

from greenpool.demo.models import COUNTERS, ITEMS, Counter, Item

MAX_SLEEP_SECONDS = 5.0


def _worker(request):
    return request.META.get("greenpool.worker") or f"{os.environ.get('GREENPOOL_WORKER_INDEX', '?')}-{os.getpid()}"


def index(request):
    return HttpResponse(
        "greenpool demo: /hello (no database), /read (3 primary-key reads), /tx (a transaction), "
        "/slow?s=0.05 (SELECT SLEEP), /whoami, /healthz\n",
        content_type="text/plain",
    )


def hello(request):
    return HttpResponse("hello\n", content_type="text/plain")


def read(request):
    ids = random.sample(range(1, ITEMS + 1), 3)
    items = [Item.objects.get(pk=pk) for pk in ids]
    return JsonResponse({"items": [{"id": i.id, "name": i.name, "price_cents": i.price_cents} for i in items]})


def tx(request):
    pk = random.randint(1, COUNTERS)
    with transaction.atomic():
        Counter.objects.filter(pk=pk).update(value=F("value") + 1)
        value = Counter.objects.get(pk=pk).value
    return JsonResponse({"counter": pk, "value": value})


def slow(request):
    try:
        seconds = float(request.GET.get("s", "0.05"))
    except ValueError:
        return HttpResponseBadRequest("s must be a number of seconds\n")
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        return HttpResponseBadRequest(f"s must be between 0 and {MAX_SLEEP_SECONDS:g}\n")
    with connection.cursor() as cursor:
        cursor.execute("SELECT SLEEP(%s)", [seconds])
        cursor.fetchone()
    return JsonResponse({"slept": seconds})


def whoami(request):
    return JsonResponse(
        {
            "worker": _worker(request),
            "pid": os.getpid(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "scheme": request.scheme,
        }
    )


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return HttpResponse("ok\n", content_type="text/plain")
