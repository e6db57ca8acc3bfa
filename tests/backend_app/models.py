from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    counter = models.IntegerField(default=0)

    class Meta:
        app_label = "backend_app"
