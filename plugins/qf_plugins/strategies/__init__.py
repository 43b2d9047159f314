"""Search-strategy plugins."""
