"""The upgrade gate: results files, the verdict of old against new, the HTML report, plots, and the
``pytest-convergence gate`` command that trains both versions."""
