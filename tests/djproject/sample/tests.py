"""Run by tests/test_backend_django_tools.py through `django-admin test`."""

from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase

from tests.djproject.sample.models import Note


class NoteTestCase(TestCase):
    def test_writes_are_rolled_back_between_tests(self):
        Note.objects.create(text="one 😀")
        self.assertEqual(Note.objects.get().text, "one 😀")
        self.assertIsNotNone(connection.pool)
        self.assertTrue(connection.settings_dict["NAME"].startswith("test_"))

    def test_starts_empty(self):
        self.assertEqual(Note.objects.count(), 0)


class NoteTransactionTestCase(TransactionTestCase):
    def test_atomic_commit_and_rollback(self):
        with transaction.atomic():
            Note.objects.create(text="kept")
        try:
            with transaction.atomic():
                Note.objects.create(text="dropped")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        self.assertEqual(list(Note.objects.values_list("text", flat=True)), ["kept"])
