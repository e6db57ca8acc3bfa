"""Django database backends built on greenpool."""
