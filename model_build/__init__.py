"""The model build library (export, prepare, calibrate, quantize, search, evaluate, benchmark, package)."""

import os

# onnxruntime 1.29+ uploads telemetry (1DS, mobile.events.data.microsoft.com) from Linux as well, a few
# seconds after it is imported. An ops tool never reaches out uninvited: opt out before any import of
# onnxruntime in this package. An explicit value (even "0") is respected.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
