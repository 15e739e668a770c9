"""The email and prompt templates, shipped inside the package (`email/`, `ads/`).

Setuptools installs package data as plain files, so a path works from a source tree and
from an installed wheel alike. `TEMPLATES_DIR` (the setting) can point elsewhere.
"""

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent
