"""Loss-history snapshots: the text format, the tolerant comparison, calibration of tolerances from
data, the syrupy extension, and (in one module) the syrupy internals it needs."""
