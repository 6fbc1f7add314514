"""The reconciler's settings from the environment (the only place ``outbox.reconcile`` reads it).

======================== ===================================================================================
variable                 meaning
======================== ===================================================================================
OUTBOX_REPORT_HMAC_KEY   secret for ``outbox reconcile --sign`` and ``outbox verify`` (HMAC-SHA256). At least
                         16 characters; keep it in a secret store, not beside the reports. When it is set,
                         ``outbox verify`` also *requires* a signature, so a stripped signature is caught.
======================== ===================================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from outbox.errors import ConfigError

HMAC_KEY_VAR = "OUTBOX_REPORT_HMAC_KEY"
MIN_KEY_CHARS = 16


def hmac_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key, or None when unset. A key that is too short fails fast."""
    raw = (os.environ if environ is None else environ).get(HMAC_KEY_VAR, "")
    if not raw:
        return None
    if len(raw) < MIN_KEY_CHARS:
        raise ConfigError(f"{HMAC_KEY_VAR} must be at least {MIN_KEY_CHARS} characters, got {len(raw)}")
    return raw.encode()
