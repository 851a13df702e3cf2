"""The rules of HTTP caching (RFC 9111, 5861, 9211, 9213), sans I/O.

Nothing here knows which protocol a request came on, opens a socket or awaits.
Time is always passed in as ``now`` (seconds since the epoch).
"""
