"""``manage.py seed``: the demo's rows (idempotent: only what is missing)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from greenpool.demo.models import COUNTERS, ITEMS, Counter, Item


class Command(BaseCommand):
    help = "Create the demo's items and counters if they are missing."

    def handle(self, *args, **options):
        with transaction.atomic():
            have = set(Item.objects.values_list("id", flat=True))
            Item.objects.bulk_create(
                [Item(id=i, name=f"item {i}", price_cents=100 + i) for i in range(1, ITEMS + 1) if i not in have],
                batch_size=500,
            )
            have = set(Counter.objects.values_list("id", flat=True))
            Counter.objects.bulk_create([Counter(id=i) for i in range(1, COUNTERS + 1) if i not in have])
        self.stdout.write(f"seeded: {Item.objects.count()} items, {Counter.objects.count()} counters")
