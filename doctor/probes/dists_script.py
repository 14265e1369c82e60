"""Run by the inspected interpreter: print its environment as JSON. Standalone: imports nothing of doctor."""
import json
import os
import sys


def collect():
    from importlib import metadata

    dists = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in dists:
            dists[name.lower()] = dist.version
    conda = os.environ.get("CONDA_PREFIX") if os.path.isdir(os.path.join(sys.prefix, "conda-meta")) else None
    return {
        "version": "%d.%d.%d" % sys.version_info[:3],
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "prefix": sys.prefix,
        "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
        "conda": os.path.isdir(os.path.join(sys.prefix, "conda-meta")),
        "conda_prefix": conda,
        "distributions": dict(sorted(dists.items())),
    }


def main():
    print(json.dumps(collect()))


if __name__ == "__main__":
    main()
