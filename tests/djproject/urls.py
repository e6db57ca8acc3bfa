from django.db import connection
from django.http import JsonResponse
from django.urls import path

from greenpool.django_metrics import metrics_view


def server_connection(request):
    """The server thread id this request used, and this process's pool size."""
    with connection.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID(), SLEEP(%s)", (float(request.GET.get("sleep", "0")),))
        (thread_id, _) = cur.fetchone()
    stats = connection.pool.get_stats()
    return JsonResponse({"thread_id": thread_id, "pool_size": stats["pool_size"], "mode": connection.pool.mode})


urlpatterns = [path("conn", server_connection, name="conn"), path("metrics", metrics_view)]
