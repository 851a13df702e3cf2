"""A real static-asset origin server: Starlette on Hypercorn.

Public API:

* ``create_app(root, rules=None, *, access_log=False)`` — the Starlette app
  (``origin.app``).
* ``CacheRules``, ``load_rules``, ``RulesError`` — Cache-Control rules
  (``origin.rules``).
* ``ensure_sample_site(dest=None)`` — the bundled sample site, with its large
  files generated on first use (``origin.sample``).
* The ``origin`` command: ``origin.cli.main``.
"""

from origin.app import create_app
from origin.rules import CacheRules, RulesError, load_rules
from origin.sample import ensure_sample_site

__all__ = ["CacheRules", "RulesError", "create_app", "ensure_sample_site", "load_rules"]
