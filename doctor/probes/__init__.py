"""Built-in probes. Each collects one JSON-serialisable facts section and judges nothing."""
from . import gpu, host, python_env, torch_env  # noqa: F401  (importing registers them)
