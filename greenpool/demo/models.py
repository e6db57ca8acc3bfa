from django.db import models

#: Rows the seed command creates; /read picks primary keys in 1..ITEMS.
ITEMS = 1000
#: Counter rows; /tx updates one at random, so concurrent transactions seldom wait on one row lock.
COUNTERS = 16


class Item(models.Model):
    name = models.CharField(max_length=64)
    price_cents = models.IntegerField()

    class Meta:
        db_table = "greenpool_demo_item"


class Counter(models.Model):
    value = models.BigIntegerField(default=0)

    class Meta:
        db_table = "greenpool_demo_counter"
