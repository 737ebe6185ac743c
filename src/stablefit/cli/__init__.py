"""The ``stablefit`` command line: one module per command group."""
