"""The one exception a bad recipe or override raises, before any work starts."""
from __future__ import annotations


class ConfigError(ValueError):
    """A recipe, base chain or override that does not fit the schema.

    The message is meant for the user as-is: it names the full dotted key, where the value
    came from (file or override) and, for unknown keys, the closest valid key. The CLI prints
    it without a traceback.
    """
