"""Qt tests run without a display: the offscreen platform unless one was chosen."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
