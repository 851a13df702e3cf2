"""Process wiring: certificates, listening sockets, the fronts and the admin API of one node, workers.

The only layer that knows every other: it builds an ``EdgeCore``, binds the listeners,
starts the fronts and the admin API on them, and supervises worker processes.
"""
