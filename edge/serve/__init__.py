"""Protocol adapters. They turn wire requests into ``Request`` and call ``edge.core``."""
