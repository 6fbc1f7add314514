"""The version of kafka-outbox: one source, the ``version`` of pyproject.toml.

Installed (a wheel, or ``pip install -e``), it is read from the distribution's metadata, which pyproject.toml
wrote. A source tree put on ``sys.path`` without being installed has no metadata: pyproject.toml beside the
package says it then.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from outbox.extras import DISTRIBUTION

UNKNOWN = "0+unknown"


def _read() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return UNKNOWN
    return str(project["version"]) if project.get("name") == DISTRIBUTION and "version" in project else UNKNOWN


VERSION = _read()
