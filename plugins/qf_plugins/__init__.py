"""qf's built-in plugins: quant types and search strategies, registered through the ``qf`` entry-point group."""
