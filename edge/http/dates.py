"""HTTP-date parsing and formatting (RFC 9110 §5.6.7).

Recipients must accept the three historical formats; senders emit only
IMF-fixdate. An unparseable date is ``None`` and callers treat it as absent
(or, for Expires, as "already expired").
"""

from __future__ import annotations

import calendar
import re
import time

_MONTHS = {
    b"jan": 1, b"feb": 2, b"mar": 3, b"apr": 4, b"may": 5, b"jun": 6,
    b"jul": 7, b"aug": 8, b"sep": 9, b"oct": 10, b"nov": 11, b"dec": 12,
}  # fmt: skip

_IMF = re.compile(rb"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_RFC850 = re.compile(rb"^[A-Za-z]+, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_ASCTIME = re.compile(rb"^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$")


def parse_http_date(value: bytes | str) -> float | None:
    """Return seconds since the epoch for an HTTP-date, or None if invalid."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    raw = raw.strip()
    if m := _IMF.match(raw):
        day, mon, year, hh, mm, ss = m.groups()
        year_i = int(year)
    elif m := _RFC850.match(raw):
        day, mon, yy, hh, mm, ss = m.groups()
        # RFC 9110: a two-digit year more than 50 years in the future is in the past century.
        this_year = time.gmtime().tm_year
        year_i = 2000 + int(yy)
        if year_i > this_year + 50:
            year_i -= 100
    elif m := _ASCTIME.match(raw):
        mon, day, hh, mm, ss, year = m.groups()
        year_i = int(year)
    else:
        return None
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    try:
        fields = (year_i, month, int(day), int(hh), int(mm), int(ss))
        if not (1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
            return None
        return float(calendar.timegm((*fields, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTH_NAMES = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
                b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")  # fmt: skip


def format_http_date(epoch: float) -> bytes:
    """IMF-fixdate for ``epoch``, e.g. ``b"Sun, 06 Nov 1994 08:49:37 GMT"``."""
    t = time.gmtime(int(epoch))
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTH_NAMES[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec,
    )  # fmt: skip
