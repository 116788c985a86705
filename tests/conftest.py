import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

# Run in subprocesses with 8 simulated devices (see test_multi_device.py);
# importing them here would fail their device-count check.
collect_ignore = ["multidevice_checks.py", "multiprocess_worker.py"]
