"""qf's built-in architecture plugins (registered through the ``qf`` entry-point group)."""
