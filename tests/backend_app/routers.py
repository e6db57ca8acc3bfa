class PrimaryReplicaRouter:
    """Reads from "replica", writes to "default": the usual read-replica setup."""

    def db_for_read(self, model, **hints):
        return "replica"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True
