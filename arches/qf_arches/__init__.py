"""qf's built-in architecture plugins and ftype presets (registered through the ``qf`` entry-point group)."""
