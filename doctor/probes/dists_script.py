"""Run by the inspected interpreter: print its environment as JSON. Standalone: imports nothing of doctor."""
import json
import os
import sys


def deepspeed_ops():
    """DeepSpeed's build record (git_version_info_installed.py) read as literals, without importing
    deepspeed: which ops were prebuilt at install and which will be JIT-compiled at first use."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("deepspeed")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "git_version_info_installed.py")
    out = {"source": path}
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError) as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
        return out
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("installed_ops", "compatible_ops", "torch_info", "version"):
                try:
                    out[name] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


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
        "deepspeed_ops": deepspeed_ops() if "deepspeed" in dists else None,
    }


def main():
    print(json.dumps(collect()))


def exit_now(code):
    """Leave without interpreter teardown once the output is flushed (the listing is in the pipe already)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exc:
        exit_now(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
    except BaseException:
        import traceback

        traceback.print_exc()
        exit_now(1)
    exit_now(0)
