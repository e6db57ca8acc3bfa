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
