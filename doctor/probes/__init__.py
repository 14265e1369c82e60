"""Built-in probes, one module per facts section (see doctor.probing.BUILTIN). Each collects one
JSON-serialisable section and judges nothing. Imported on demand, so keep this file empty."""
