"""ENGINE "greenpool.backends.mysql": Django's MySQL backend on a greenpool pool."""
