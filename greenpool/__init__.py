"""greenpool: a greenlet-safe, bounded MySQL connection pool and Django backend."""

from greenpool.errors import PoolClosed, PoolError, PoolTimeout, TooManyRequests
from greenpool.pool import Pool

__version__ = "0.1.0"

__all__ = ["Pool", "PoolError", "PoolTimeout", "PoolClosed", "TooManyRequests", "__version__"]
