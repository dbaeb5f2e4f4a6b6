#!/usr/bin/env python
"""Moved to tools/measure_settings.py (a one-off measurement; its result is docs/machine-settings.md).

This forwarder keeps the command that docs/machine-settings.md and docs/machines.md name working;
delete it once they name tools/measure_settings.py.
"""

import runpy
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "measure_settings.py"
sys.argv[0] = str(TOOL)
runpy.run_path(str(TOOL), run_name="__main__")
