"""Built-in checks (installed as `doctor.checks`), registered through the `doctor.checks` entry points."""
