"""Makes this Python a stand-in for a Jetson's (test only): `import tensorrt` gives the fake module.

tests/test_sweep_device.py puts this folder on the PYTHONPATH of the `python3` the fake
Jetson (private sshd) runs, so `edgeseg eval` there loads the fake trtexec's engines
through edgeseg's real TensorRT runtime code. The fake engine runs ONNX Runtime: nothing
about TensorRT's numerics is tested this way, only that the device-side eval runs and
its result travels back.
"""

import os
import sys

from tests import fake_tensorrt

_trt = fake_tensorrt.make_fake_tensorrt(os.environ.get("FAKE_TRT_PYTHON_VERSION", "8.5.2"))
_trt.fake_device_memory = fake_tensorrt.FakeDeviceMemory()
sys.modules["tensorrt"] = _trt

import edgeseg.export.tensorrt.cuda as _cuda  # noqa: E402

_cuda.open_cuda = lambda: _trt.fake_device_memory
