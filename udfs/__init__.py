"""Spark UDFs bridging Arrow batches to the torch code in ``attribution`` (the attribution issue)."""
