"""``python -m pytest_convergence.cli``: the ``pytest-convergence`` command."""

from . import main

raise SystemExit(main())
