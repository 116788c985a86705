import os
import pathlib
import re
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

_MODULE_MARK = re.compile(r"^pytestmark = pytest\.mark\.(\w+)$", re.M)


def pytest_ignore_collect(collection_path: pathlib.Path, config):
  """A tier that leaves a module's marker out (`-m "not reference and ..."`)
  does not import that module: importing TensorFlow alone takes seconds."""
  expression = config.option.markexpr
  if not expression or collection_path.suffix != ".py":
    return None
  mark = _MODULE_MARK.search(collection_path.read_text())
  if mark and re.search(rf"\bnot {mark[1]}\b", expression):
    return True
  return None
