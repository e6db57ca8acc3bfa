from django.conf import settings
from django.urls import path

from greenpool.demo import views

urlpatterns = [
    path("", views.index),
    path("hello", views.hello),
    path("read", views.read),
    path("tx", views.tx),
    path("slow", views.slow),
    path("whoami", views.whoami),
    path("healthz", views.healthz),
]

if getattr(settings, "GREENPOOL_DEMO_TEST_VIEWS", False):
    # Only with GREENPOOL_DEMO_TEST_VIEWS=1: views that leave session state
    # behind on purpose, for the fault tests. Never on by default.
    from greenpool.demo import test_views

    urlpatterns += [
        path("test/dirty", test_views.dirty),
        path("test/session", test_views.session),
        path("test/interrupted", test_views.interrupted),
        path("test/reprs", test_views.reprs),
        path("test/bad_sql", test_views.bad_sql),
    ]
