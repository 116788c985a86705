import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

# Run in subprocesses with 8 simulated devices (see test_multi_device.py);
# importing them here would fail their device-count check.
collect_ignore = ["multidevice_checks.py", "multiprocess_worker.py"]

# CI runs (CI=true) replay the same hypothesis examples every time, so a
# landing never depends on a random draw; local runs keep exploring.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
  _hypothesis_settings.load_profile("ci")
