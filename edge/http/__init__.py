"""Parsing and formatting of HTTP header fields. No I/O lives here."""
