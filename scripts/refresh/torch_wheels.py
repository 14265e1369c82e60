"""Rebuild doctor/data/torch_wheels.yaml (schema 2) from PyTorch's own sources and from PyPI.

    python scripts/refresh_data.py torch \\
        --test-infra GITDIR            # pytorch/test-infra clone: which cuXYZ variants each release built
        [--pytorch GITDIR]             # pytorch/pytorch clone: TORCH_CUDA_ARCH_LIST and RELEASE.md at tag vX.Y.0
        [--builder GITDIR]             # pytorch/builder clone: the build scripts of 2.4 / 2.5 (branch release/X.Y)
        [--sources DIR]                # or: those files assembled per release (layout below)
        [--pypi-dir DIR]               # saved PyPI documents instead of the live JSON API (tests use this)
        [--save-pypi DIR] [--inspect-wheels]
        [--first 2.4] [--out PATH] [--date YYYY-MM-DD] [--check]

What each source gives (all parsed, none retyped):
  PyPI          each release's patch versions, first upload date, Requires-Python, the CPython minors that have a
                wheel per platform, and the CUDA the PyPI wheel itself pulls (Requires-Dist: nvidia-*-cu12 pins up
                to 2.10, cuda-toolkit[...]==13.x from 2.11; none = CPU-only wheel). With --inspect-wheels the live
                run also reads one wheel per platform by HTTP range requests: torch/version.py (its +cuXYZ build
                and git commit), the arch list compiled into torch/lib/libtorch_python.so (the string
                torch.cuda.get_arch_list() splits: sm_XY = cubin, compute_XY = PTX) and torch/cuda/__init__.py's
                PYTORCH_RELEASES_CODE_CC (torch's own table of the cubins of each CUDA build of the release; from
                2.13 per host, and its comment says a validator keeps it in sync with the build table). Those
                readings are saved with --save-pypi and read back from --pypi-dir.
  test-infra    tools/scripts/generate_binary_build_matrix.py: the "release" channel at the first main-branch
                commit whose CURRENT_STABLE_VERSION is X.Y.* (the go-live commit); if there is none, the "test"
                channel at the head of branch release/X.Y (the release candidates). CUDA_ARCHES_DICT gives
                Linux x86_64 and Windows (minus CUDA_ARCHES_NO_WINDOWS), CUDA_AARCH64_ARCHES(_DICT) Linux aarch64.
  pytorch       at tag vX.Y.0: .ci/{wheel/linux,manywheel}/build_env_setup.py (TORCH_CUDA_ARCH_LIST_TABLE), or
                .ci/manywheel/build_cuda.sh (case ${CUDA_VERSION}), .ci/aarch64_linux/aarch64_ci_build.sh,
                .ci/pytorch/windows/build_env_setup.py or cuda{XYZ}.bat; RELEASE.md "Release Compatibility Matrix".
  builder       at release/X.Y (2.4, 2.5 were built from it): manywheel/build_cuda.sh, windows/cuda{XYZ}.bat.

--sources DIR lays the same files out by release: DIR/<X.Y>/<owner>+<repo>/<path>, with DIR/<X.Y>/manifest.yaml
    "<owner>/<repo>": {commit: <sha>, ref: <tag or branch or how it was read>, channel: release|test}
(channel only for pytorch/test-infra). A file missing from DIR is a source not read: its rows come out unconfirmed.

Rules kept by the output: an arch list comes from the PyPI wheel of that build (exact), else from a build file
read at that release, else from the release's own validated per-host PYTORCH_RELEASES_CODE_CC (cubins only; its
PTX is named unconfirmed). A wheel beats a build file that disagrees (a note says so); a build file and
PYTORCH_RELEASES_CODE_CC that disagree, or two build files that disagree, leave the list out. Nothing is carried
over from a neighbouring release: what could not be read is left out and named in the release's `unconfirmed`.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import fnmatch
import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

NAME = "torch"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "doctor" / "data" / "torch_wheels.yaml"
PLATFORMS = ("linux-x86_64", "linux-aarch64", "windows-x86_64")
INDEX_URL = "https://download.pytorch.org/whl/{variant}"
PYPI_PROJECT_URL = "https://pypi.org/pypi/torch/json"
PYPI_VERSION_URL = "https://pypi.org/pypi/torch/{version}/json"
MATRIX_PATH = "tools/scripts/generate_binary_build_matrix.py"
MACHINE = {"linux-x86_64": "x86_64", "linux-aarch64": "aarch64", "windows-x86_64": "AMD64"}
SYSTEM = {"linux-x86_64": "Linux", "linux-aarch64": "Linux", "windows-x86_64": "Windows"}


class ParseError(ValueError):
    """A source file has a shape this script does not understand; its rows come out unconfirmed."""


# ------------------------------------------------------------------------------------------ arch list values

_ARCH_TOKEN = re.compile(r"^(\d+)\.(\d)([af]?)(\+PTX)?$")


def arch_sort_key(token: str) -> Tuple[int, int, str]:
    m = _ARCH_TOKEN.match(token)
    if not m:
        raise ParseError(f"not an arch list entry: {token!r}")
    return int(m.group(1)), int(m.group(2)), m.group(3)


def normalize_arch_list(value: str) -> List[str]:
    """'5.0;6.0 7.0;9.0+PTX' -> ['5.0', '6.0', '7.0', '9.0+PTX'] (sorted, duplicates dropped)."""
    tokens = [t for t in re.split(r"[;\s]+", value.strip()) if t]
    if not tokens:
        raise ParseError("empty TORCH_CUDA_ARCH_LIST")
    for t in tokens:
        arch_sort_key(t)
    return sorted(dict.fromkeys(tokens), key=arch_sort_key)


def arch_from_cc_ints(ccs: Iterable[int], ptx: Iterable[int] = ()) -> List[str]:
    """{50, 120} with ptx {120} -> ['5.0', '12.0+PTX'] (the int form build_env_setup.py uses: 120 == 12.0)."""
    ptx = set(ptx)
    return sorted((f"{cc // 10}.{cc % 10}" + ("+PTX" if cc in ptx else "") for cc in set(ccs)), key=arch_sort_key)


def arch_from_wheel_flags(flags: str) -> List[str]:
    """'sm_75 sm_90a sm_120 compute_120' -> ['7.5', '9.0a', '12.0+PTX'] (compute_XY is the PTX of XY)."""
    cubins, ptx = [], []
    for token in flags.split():
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", token)
        if not m:
            raise ParseError(f"not an nvcc arch flag: {token!r}")
        entry = f"{m.group(2)}.{m.group(3)}{m.group(4)}"
        (cubins if m.group(1) == "sm" else ptx).append(entry)
    lone = [p for p in ptx if p not in cubins]
    if lone:
        raise ParseError(f"PTX without a cubin of the same arch: {lone}")
    return sorted((c + ("+PTX" if c in ptx else "") for c in dict.fromkeys(cubins)), key=arch_sort_key)


def af_targets(arch: Sequence[str]) -> List[str]:
    """The arch-specific ('a') and family-specific ('f') entries of an arch list."""
    return [a for a in arch if _ARCH_TOKEN.match(a).group(3)]


def variant_of(cuda: str) -> str:
    """'12.8' -> 'cu128'."""
    major, minor = cuda.split(".")[:2]
    return f"cu{major}{minor}"


def cuda_of(variant: str) -> str:
    """'cu128' -> '12.8', 'cu130' -> '13.0'."""
    digits = variant[2:]
    return f"{digits[:-1]}.{digits[-1]}"


# ------------------------------------------------------------------------------------- python literal tables

def py_literals(text: str) -> Dict[str, Any]:
    """Top-level NAME = <literal> assignments of a Python file (nothing is executed)."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ParseError(f"not Python: {exc}") from exc
    out: Dict[str, Any] = {}
    for node in tree.body:
        target = value = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name):
            try:
                out[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
    return out


def py_functions(text: str) -> List[str]:
    return [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)]


# --------------------------------------------------------------------------- test-infra build matrix (variants)

_OS_PLATFORM = {"LINUX": "linux-x86_64", "LINUX_AARCH64": "linux-aarch64", "WINDOWS": "windows-x86_64"}


def _matrix_code_additions(text: str, values: Dict[str, Any], channel: str) -> Dict[str, List[str]]:
    """CUDA versions initialize_globals() appends for a channel, e.g. on release/2.12:
        if channel == TEST and os == LINUX:
            CUDA_ARCHES = CUDA_ARCHES + ["12.9"]
    Only that form is recognised (a test of `channel`/`os` against module constants, then `X = X + [literals]`)."""
    out: Dict[str, List[str]] = {}
    func = next((n for n in ast.parse(text).body
                 if isinstance(n, ast.FunctionDef) and n.name == "initialize_globals"), None)
    if func is None:
        return out

    def const(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return values.get(node.id)
        raise ParseError("not a constant")

    def holds(test: ast.AST, os_name: str) -> bool:
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            return all(holds(v, os_name) for v in test.values)
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.NotEq)) \
                and isinstance(test.left, ast.Name) and test.left.id in ("channel", "os"):
            want = const(test.comparators[0])
            have = channel if test.left.id == "channel" else values.get(os_name)
            return (have == want) == isinstance(test.ops[0], ast.Eq)
        raise ParseError("condition not understood")

    for node in ast.walk(func):
        if not isinstance(node, ast.If):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id in ("CUDA_ARCHES", "CUDA_AARCH64_ARCHES")
                    and isinstance(stmt.value, ast.BinOp) and isinstance(stmt.value.op, ast.Add)
                    and isinstance(stmt.value.left, ast.Name) and stmt.value.left.id == stmt.targets[0].id
                    and isinstance(stmt.value.right, ast.List)):
                continue
            added = [str(ast.literal_eval(e)) for e in stmt.value.right.elts]
            oses = ["LINUX_AARCH64"] if stmt.targets[0].id == "CUDA_AARCH64_ARCHES" else ["LINUX", "WINDOWS"]
            for os_name in oses:
                try:
                    if holds(node.test, os_name):
                        out.setdefault(_OS_PLATFORM[os_name], []).extend(added)
                except ParseError:
                    raise ParseError(f"initialize_globals adds {added} under a condition not understood")
    return out


def matrix_cuda_by_platform(values: Dict[str, Any], channel: str, text: str = "") -> Dict[str, List[str]]:
    """CUDA versions a generate_binary_build_matrix.py channel builds per platform."""
    arches = values.get("CUDA_ARCHES_DICT")
    if not isinstance(arches, dict) or channel not in arches:
        raise ParseError(f"no CUDA_ARCHES_DICT[{channel!r}]")
    linux = [str(v) for v in arches[channel]]
    no_windows = set(values.get("CUDA_ARCHES_NO_WINDOWS") or [])
    aarch = values.get("CUDA_AARCH64_ARCHES_DICT")
    if isinstance(aarch, dict) and channel in aarch:
        aarch64 = list(aarch[channel])
    else:
        aarch64 = list(values.get("CUDA_AARCH64_ARCHES") or [])
    out = {
        "linux-x86_64": linux,
        "linux-aarch64": [str(v).replace("-aarch64", "") for v in aarch64],
        "windows-x86_64": [v for v in linux if v not in no_windows],
    }
    for platform, added in (_matrix_code_additions(text, values, channel) if text else {}).items():
        out[platform] = out[platform] + [a.replace("-aarch64", "") for a in added
                                         if a.replace("-aarch64", "") not in out[platform]]
    return out


def matrix_summary(by_platform: Dict[str, List[str]]) -> str:
    return ", ".join(f"{p}: {' '.join(by_platform[p]) or 'none'}" for p in PLATFORMS)


# --------------------------------------------------------------------------------------- shell build scripts

_IF = re.compile(r"^(el)?if\s+(.*?);?\s*then\s*$")
_ASSIGN = re.compile(r"^(?:export\s+)?TORCH_CUDA_ARCH_LIST=(.*)$")
_INLINE_ARCH = re.compile(
    r'\$\(\[\[\s*"?\$\{?ARCH\}?"?\s*==?\s*"?aarch64"?\s*\]\]\s*&&\s*echo\s+"([^"]*)"\s*\|\|\s*echo\s+"([^"]*)"\s*\)')


@dataclass
class ShellContext:
    """What a build script branches on: the CUDA version being built and the host machine."""

    cuda: str
    machine: str                 # x86_64 | aarch64
    saw_machine: bool = False    # the script itself told the machines apart


def _shell_condition(cond: str, ctx: ShellContext) -> Optional[bool]:
    """True/False for the conditions a release wheel build takes; None for anything else."""
    c = cond.strip()
    m = re.fullmatch(r'\[\[\s*"?\$\{?(GPU_ARCH_TYPE|ARCH|\(uname -m\))\}?"?\s*==?\s*"?([\w-]+)"?\s*\]\]', c)
    if m:
        ctx.saw_machine = True
        aarch64_words = ("cuda-aarch64", "aarch64")
        return (m.group(2) in aarch64_words) == (ctx.machine == "aarch64")
    m = re.fullmatch(r'\[\[\s*"?\$\{?PACKAGE_TYPE\}?"?\s*==?\s*"?(\w+)"?\s*\]\]', c)
    if m:
        return m.group(1) in ("manywheel", "wheel")
    if re.fullmatch(r'\[\[\s*-n\s+"?\$\{?OVERRIDE_TORCH_CUDA_ARCH_LIST\}?"?\s*\]\]', c):
        return False  # a hand override, unset in release builds (checked against the wheel where PyPI has it)
    m = re.fullmatch(r'\[\[\s*"?\$\{?(GPU_ARCH_VERSION|DESIRED_CUDA|CUDA_VERSION)\}?"?\s*==?\s*(\S+)\s*\]\]', c)
    if m:
        pattern = m.group(2).replace('"', "")
        if m.group(1) == "DESIRED_CUDA":
            return fnmatch.fnmatchcase(variant_of(ctx.cuda), pattern)
        return fnmatch.fnmatchcase(ctx.cuda, pattern) or fnmatch.fnmatchcase(f"{ctx.cuda}-aarch64", pattern)
    return None


def _shell_value(rhs: str, current: Optional[str], ctx: ShellContext) -> str:
    value = rhs.strip()
    if value.endswith(";;"):
        value = value[:-2].rstrip()
    if value.endswith(('";', "';")):
        value = value[:-1]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]

    def inline(m: "re.Match[str]") -> str:
        ctx.saw_machine = True
        return m.group(1) if ctx.machine == "aarch64" else m.group(2)

    value = _INLINE_ARCH.sub(inline, value)
    for ref in ("${TORCH_CUDA_ARCH_LIST}", "$TORCH_CUDA_ARCH_LIST"):
        if ref in value:
            if current is None:
                raise ParseError("TORCH_CUDA_ARCH_LIST extended before it was set")
            value = value.replace(ref, current)
    if "$" in value or "`" in value:
        raise ParseError(f"shell expression not understood: {rhs.strip()!r}")
    return value


@dataclass
class _Branch:
    """One open if/elif/else: is the current branch taken (None: not known), was an earlier one taken."""

    active: Optional[bool]
    taken: Optional[bool]


def _run_shell(lines: Sequence[str], value: Optional[str], ctx: ShellContext) -> Optional[str]:
    """Follow TORCH_CUDA_ARCH_LIST through straight-line shell with if/elif/else/fi (no case)."""
    stack: List[_Branch] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _IF.match(line)
        if m and not m.group(1):
            cond = _shell_condition(m.group(2), ctx)
            stack.append(_Branch(cond, cond))
            continue
        if m or line == "else":
            if not stack:
                raise ParseError(f"{line.split()[0]} without if")
            top = stack[-1]
            cond = _shell_condition(m.group(2), ctx) if m else True
            if top.taken is True:
                top.active = False
            elif top.taken is False:
                top.active, top.taken = cond, cond
            else:
                top.active = False if cond is False else None
            continue
        if line == "fi":
            if not stack:
                raise ParseError("fi without if")
            stack.pop()
            continue
        a = _ASSIGN.match(line)
        if a is None:
            if "TORCH_CUDA_ARCH_LIST=" in line and not line.startswith(("echo", "printf")):
                raise ParseError(f"TORCH_CUDA_ARCH_LIST set in a form not understood: {line!r}")
            continue
        if any(b.active is False for b in stack):
            continue
        if any(b.active is None for b in stack):
            raise ParseError(f"TORCH_CUDA_ARCH_LIST set under a condition not understood: {line!r}")
        value = _shell_value(a.group(1), value, ctx)
    if stack:
        raise ParseError("if without fi")
    return value


_CASE = re.compile(r'^\s*case\s+"?\$\{?CUDA_VERSION\}?"?\s+in\s*$')
_ARM = re.compile(r"^([^()\s][^()]*?)\)\s*(.*)$")


def _case_arms(lines: Sequence[str]) -> Tuple[List[Tuple[List[str], List[str]]], int]:
    """Split the body of `case ... in` into (patterns, statements); also return the index after `esac`."""
    arms: List[Tuple[List[str], List[str]]] = []
    open_arm = False
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not open_arm:
            if line == "esac":
                return arms, i + 1
            m = _ARM.match(line)
            if not m:
                raise ParseError(f"case arm not understood: {line!r}")
            arms.append(([p.strip().strip('"') for p in m.group(1).split("|")], []))
            open_arm = True
            line = m.group(2).strip()
            if not line:
                continue
        if re.match(r"^case\s", line):
            raise ParseError("nested case statement")
        if line.endswith(";;"):
            if line[:-2].strip():
                arms[-1][1].append(line[:-2].strip())
            open_arm = False
            continue
        arms[-1][1].append(line)
    raise ParseError("case without esac")


def arch_from_build_cuda_sh(text: str, cuda: str, machine: str) -> Optional[List[str]]:
    """TORCH_CUDA_ARCH_LIST a manywheel build_cuda.sh sets for one CUDA version on one machine.

    None when the case statement has no arm for that CUDA version (only `*)`), or when asked for aarch64 and the
    script does not tell aarch64 apart (then it is not known to be the aarch64 source)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _CASE.match(line)), None)
    if start is None:
        raise ParseError("no `case ${CUDA_VERSION} in`")
    ctx = ShellContext(cuda=cuda, machine=machine)
    value = _run_shell(lines[:start], None, ctx)
    arms, after = _case_arms(lines[start + 1:])
    chosen = next((body for patterns, body in arms
                   if any(p != "*" and fnmatch.fnmatchcase(cuda, p) for p in patterns)), None)
    if chosen is None:
        return None
    ctx.saw_machine = False  # only a machine test inside the chosen arm makes this the aarch64 list
    value = _run_shell(chosen, value, ctx)
    arm_told_machines = ctx.saw_machine
    value = _run_shell(lines[start + 1 + after:], value, ctx)
    if value is None or (machine == "aarch64" and not arm_told_machines):
        return None
    return normalize_arch_list(value)


def arch_from_aarch64_ci_build(text: str, cuda: str) -> Optional[List[str]]:
    """TORCH_CUDA_ARCH_LIST .ci/aarch64_linux/aarch64_ci_build.sh exports for one CUDA version (None if none)."""
    ctx = ShellContext(cuda=cuda, machine="aarch64")
    value = _run_shell(text.splitlines(), None, ctx)
    return normalize_arch_list(value) if value is not None else None


def arch_from_windows_bat(text: str) -> Optional[List[str]]:
    """`set TORCH_CUDA_ARCH_LIST=...` of a windows cuda{XYZ}.bat (the torch branch, not BUILD_VISION's).

    None when the file sets no literal list (e.g. `set "TORCH_CUDA_ARCH_LIST=%CUDA_ARCH_LIST%"`)."""
    found: List[str] = []
    vision = False
    for raw in text.splitlines():
        line = raw.strip()
        if re.match(r'(?i)^if\s+(not\s+)?"%BUILD_VISION%"\s*==\s*""\s*\(', line):
            vision = bool(re.match(r"(?i)^if\s+not", line))
            continue
        if re.match(r"(?i)^\)\s*else\s*\(", line):
            vision = not vision
            continue
        if line == ")":
            vision = False
            continue
        m = re.match(r'(?i)^set\s+"?TORCH_CUDA_ARCH_LIST=([^"]*)"?\s*$', line)
        if m and not vision and "%" not in m.group(1):
            found.append(m.group(1))
    if not found:
        return None
    if len(set(found)) > 1:
        raise ParseError(f"several TORCH_CUDA_ARCH_LIST values: {found}")
    return normalize_arch_list(found[0])


def arch_from_cuda_config_bat(text: str, cuda: str) -> Optional[List[str]]:
    """CUDA_ARCH_LIST of the `if "%CUDA_VER%"=="126" (` block of windows/internal/cuda_config.bat."""
    xyz = cuda.replace(".", "")
    block: Optional[str] = None
    found: List[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r'(?i)^(?:\)\s*else\s+)?if\s+"%CUDA_VER%"\s*==\s*"(\d+)"\s*\(', line)
        if m:
            block = m.group(1)
            continue
        if re.match(r"(?i)^\)\s*else\s*\(", line) or line == ")":
            block = None
            continue
        m = re.match(r'(?i)^set\s+"?CUDA_ARCH_LIST=([^"]*)"?\s*$', line)
        if m and block == xyz:
            found.append(m.group(1))
    if not found:
        return None
    if len(set(found)) > 1:
        raise ParseError(f"several CUDA_ARCH_LIST values for {xyz}: {found}")
    return normalize_arch_list(found[0])


def arch_from_env_setup_table(text: str, cuda: str, machine: Optional[str]) -> Tuple[Optional[List[str]], str]:
    """TORCH_CUDA_ARCH_LIST_TABLE of a build_env_setup.py (Linux: {cuda: {machine: {cc ints}}} with _PTX_ARCHES;
    Windows: {"126": "5.0;..."}). Returns (list or None, a note on how PTX was decided)."""
    values = py_literals(text)
    table = values.get("TORCH_CUDA_ARCH_LIST_TABLE")
    if not isinstance(table, dict):
        raise ParseError("no literal TORCH_CUDA_ARCH_LIST_TABLE")
    if machine is None:  # Windows table keyed "126"
        entry = table.get(cuda.replace(".", ""))
        return (normalize_arch_list(entry), "") if isinstance(entry, str) else (None, "")
    entry = table.get(cuda)
    if not isinstance(entry, dict):
        return None, ""
    ccs = entry.get(machine)
    if not ccs:
        return None, ""
    ptx = values.get("_PTX_ARCHES", set())
    note = f"_PTX_ARCHES={sorted(ptx)}"
    if "_is_release_build" in py_functions(text):
        ptx, note = set(), "PTX only for non-release builds (_is_release_build)"
    return arch_from_cc_ints(ccs, ptx), note


# ------------------------------------------------------------------------------------- RELEASE.md matrix row

def release_matrix_row(text: str, release: str) -> Optional[Dict[str, Any]]:
    """The "Release Compatibility Matrix" row of RELEASE.md for one release, or None."""
    header: Optional[List[str]] = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0].lower().startswith("pytorch version"):
            header = [c.lower() for c in cells]
            continue
        if header is None or set(cells[0]) <= {"-", " ", ":"}:
            continue
        if cells[0] != release:
            continue
        row = dict(zip(header, cells))
        out: Dict[str, Any] = {"python": row.get("python", "")}
        for key, col in (("stable_cuda", "stable cuda"), ("experimental_cuda", "experimental cuda")):
            out[key] = re.findall(r"CUDA\s+(\d+\.\d+)", row.get(col, ""))
        return out
    return None


# ------------------------------------------------------------------------------------------------ PyPI data

def wheel_platform(platform_tag: str) -> Optional[str]:
    if "manylinux" in platform_tag or platform_tag.startswith("linux_"):
        if platform_tag.endswith("x86_64"):
            return "linux-x86_64"
        if platform_tag.endswith("aarch64"):
            return "linux-aarch64"
    if platform_tag == "win_amd64":
        return "windows-x86_64"
    return None


def wheel_python(interpreter: str, abi: str) -> Optional[str]:
    m = re.fullmatch(r"cp(\d)(\d+)", interpreter)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}" + ("t" if abi.endswith("t") else "")


def python_sort_key(py: str) -> Tuple[int, int, int]:
    major, minor = py.rstrip("t").split(".")
    return int(major), int(minor), int(py.endswith("t"))


def wheel_tags(filename: str) -> List[Tuple[str, str]]:
    """(platform, python) pairs of a wheel filename; build tags (torch-2.10.0-3-cp311-...) are allowed."""
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return []
    out = []
    for tag in tags:
        platform, python = wheel_platform(tag.platform), wheel_python(tag.interpreter, tag.abi)
        if platform and python:
            out.append((platform, python))
    return out


def marker_env(platform: str, python: str) -> Dict[str, str]:
    env = dict(default_environment())
    env.update(platform_system=SYSTEM[platform], platform_machine=MACHINE[platform],
               sys_platform="win32" if platform.startswith("windows") else "linux",
               os_name="nt" if platform.startswith("windows") else "posix",
               python_version=python.rstrip("t"), python_full_version=python.rstrip("t") + ".0",
               implementation_name="cpython", platform_python_implementation="CPython")
    return env


def cuda_from_requires(requires: Sequence[str], platform: str, python: str) -> Tuple[str, str]:
    """('cu130', 'cuda-toolkit[...]==13.0.2') or ('cpu', '') from a wheel's Requires-Dist on one platform."""
    env = marker_env(platform, python)
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = req.name.lower().replace("_", "-")
        pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
        if not pins:
            continue
        if name == "cuda-toolkit" or re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", name):
            major, minor = pins[0].split(".")[:2]
            return f"cu{major}{minor}", f"{req.name}{req.specifier}"
    return "cpu", ""


def _http_get(url: str, headers: Optional[Dict[str, str]] = None, tries: int = 3) -> Optional[bytes]:
    """GET url; None on 404; retries other failures a few times."""
    for attempt in range(tries):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "doctor-refresh/1", **(headers or {})})
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if attempt == tries - 1:
                raise
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == tries - 1:
                raise
        time.sleep(2 * (attempt + 1))
    return None


class _RangeFile(io.RawIOBase):
    """A remote file read by HTTP range requests, so zipfile reads one member of a wheel without the rest."""

    def __init__(self, url: str, size: int) -> None:
        super().__init__()
        self.url, self.size, self.pos = url, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def readinto(self, buffer: Any) -> int:
        end = min(self.size, self.pos + len(buffer)) - 1
        if end < self.pos:
            return 0
        data = _http_get(self.url, {"Range": f"bytes={self.pos}-{end}"}) or b""
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _version_py(text: str) -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    for key, raw in re.findall(r"^(\w+)(?:\s*:\s*[^=\n]+)?\s*=\s*(.+?)\s*$", text, re.M):
        raw = raw.strip()
        if raw == "None":
            out[key] = None
        elif raw[:1] in "'\"":
            out[key] = raw.strip("'\"")
    return out


# The C string torch.cuda.get_arch_list() splits ("sm_75 sm_80 ... compute_120"): two or more space-separated
# nvcc targets ending in NUL. The linker may pack it right after other bytes, so no leading NUL is required.
_FLAGS = re.compile(rb"((?:sm|compute)_\d+[af]?(?: (?:sm|compute)_\d+[af]?)+)\x00")


def inspect_wheel(url: str, size: int, filename: str, arch: bool = True) -> Dict[str, Any]:
    """Read torch/version.py, METADATA and (for a CUDA build, if `arch`) the compiled arch list of one remote
    wheel, by HTTP range requests (the central directory and those members only)."""
    zf = zipfile.ZipFile(io.BufferedReader(_RangeFile(url, size), buffer_size=1 << 16))
    names = zf.namelist()
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zf.read(meta_name).decode("utf-8", "replace")
    version = _version_py(zf.read("torch/version.py").decode("utf-8", "replace"))
    out: Dict[str, Any] = {
        "filename": filename, "url": url, "version_py": version,
        "requires_dist": [l.split(":", 1)[1].strip() for l in metadata.splitlines() if l.startswith("Requires-Dist:")],
        "requires_python": next((l.split(":", 1)[1].strip() for l in metadata.splitlines()
                                 if l.startswith("Requires-Python:")), None),
        "arch_flags": None,
    }
    if "torch/cuda/__init__.py" in names:
        out.update(releases_code_cc(zf.read("torch/cuda/__init__.py").decode("utf-8", "replace")))
    if version.get("cuda") and arch:
        lib = next((n for n in names if re.fullmatch(r"torch/lib/(lib)?torch_python\.(so|dll)", n)), None)
        if lib is None:
            raise ParseError(f"{filename}: no torch_python library")
        found = {m.group(1).decode() for m in _FLAGS.finditer(zf.read(lib))}
        if len(found) != 1:
            raise ParseError(f"{filename}: {len(found)} arch flag strings in {lib}")
        out["arch_flags"] = found.pop()
        out["arch_flags_member"] = lib
    return out


def releases_code_cc(text: str) -> Dict[str, Any]:
    """PYTORCH_RELEASES_CODE_CC of a wheel's torch/cuda/__init__.py (torch's own table of the cubins each CUDA
    build of the release carries: {cuda: {host: [cc]}} or, older, {cuda: [cc]} as a union of hosts) and the comment
    above it. Empty when the release has none."""
    lines = text.splitlines()
    for node in ast.parse(text).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if not (isinstance(target, ast.Name) and target.id == "PYTORCH_RELEASES_CODE_CC"):
            continue
        value = ast.literal_eval(node.value)
        comment: List[str] = []
        i = node.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            comment.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        table = {cuda: ({host: sorted(ccs) for host, ccs in v.items()} if isinstance(v, dict) else sorted(v))
                 for cuda, v in value.items()}
        return {"releases_code_cc": table, "releases_code_cc_comment": " ".join(comment)}
    return {}


@dataclass
class PyPIVersion:
    """One torch version on PyPI: the per-version JSON shape (info + urls) and wheel readings, if any."""

    version: str
    doc: Dict[str, Any]
    wheels: Dict[str, Dict[str, Any]] = field(default_factory=dict)   # filename -> inspect_wheel() result
    where: str = ""

    @property
    def files(self) -> List[Dict[str, Any]]:
        return [f for f in self.doc.get("urls", []) if not f.get("yanked")]


def wheel_build_tag(filename: str) -> int:
    """The wheel build tag (torch-2.10.0-3-cp311-... -> 3; none -> 0); pip prefers the highest."""
    try:
        build = parse_wheel_filename(filename)[2]
    except InvalidWheelFilename:
        return 0
    return build[0] if build else 0


def _pick_wheels(files: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """One wheel per platform to read: CPython 3.12 (not free-threaded) if there is one, else the lowest minor;
    of equal tags the highest build tag, the one pip installs."""
    best: Dict[str, Tuple[Tuple[int, ...], Dict[str, Any]]] = {}
    for f in files:
        for platform, python in wheel_tags(f["filename"]):
            rank = (0 if python == "3.12" else 1, *python_sort_key(python), -wheel_build_tag(f["filename"]))
            if platform not in best or rank < best[platform][0]:
                best[platform] = (rank, f)
    return {p: f for p, (_, f) in best.items()}


def load_pypi_live(first: Version, inspect: bool, save: Optional[Path], log: Callable[[str], None]
                   ) -> List[PyPIVersion]:
    project = json.loads(_http_get(PYPI_PROJECT_URL) or b"{}")
    out = []
    for v in sorted(project.get("releases", {}), key=_version_key):
        ver = _parse_version(v)
        if ver is None or ver.is_prerelease or ver.is_devrelease or ver < first:
            continue
        files = project["releases"][v]
        raw = _http_get(PYPI_VERSION_URL.format(version=v))
        if raw:
            doc, where = json.loads(raw), PYPI_VERSION_URL.format(version=v)
        else:  # the per-version endpoint is not answering: same shape from the project JSON + a wheel's METADATA
            doc = {"info": {"version": v, "requires_python": _most_common(f.get("requires_python") for f in files),
                            "requires_dist": None}, "urls": files}
            where = f"{PYPI_PROJECT_URL} releases[{v!r}]"
        pv = PyPIVersion(v, doc, where=where)
        if inspect or doc["info"].get("requires_dist") is None:
            for platform, f in sorted(_pick_wheels(pv.files).items()):
                if not inspect and platform != "linux-x86_64":
                    continue
                log(f"reading {f['filename']}")
                pv.wheels[f["filename"]] = inspect_wheel(_absolute_url(f["url"]), int(f["size"]), f["filename"],
                                                         arch=inspect)
            x86 = next((w for w in pv.wheels.values() if "x86_64" in w["filename"] and "manylinux" in w["filename"]),
                       None)
            if doc["info"].get("requires_dist") is None and x86 is not None:
                doc["info"]["requires_dist"] = x86["requires_dist"]
                pv.where += f" + METADATA of {x86['filename']}"
        out.append(pv)
        if save:
            _save_pypi(save, pv)
    return out


def _absolute_url(url: str) -> str:
    if url.startswith("http"):
        return url
    m = re.search(r"packages/(?:packages/)?(.+)$", url)
    return "https://files.pythonhosted.org/packages/" + (m.group(1) if m else url)


def _save_pypi(directory: Path, pv: PyPIVersion) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    keep = ("filename", "upload_time_iso_8601", "upload_time", "requires_python", "yanked", "size", "url")
    doc = {"info": {k: pv.doc["info"].get(k) for k in ("version", "requires_python", "requires_dist")},
           "urls": [{k: f[k] for k in keep if k in f} for f in pv.doc.get("urls", [])],
           "source": pv.where}
    (directory / f"torch-{pv.version}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    for name, reading in pv.wheels.items():
        (directory / "wheels").mkdir(exist_ok=True)
        (directory / "wheels" / f"{name}.json").write_text(json.dumps(reading, indent=1, sort_keys=True) + "\n")


def load_pypi_dir(directory: Path, first: Version) -> List[PyPIVersion]:
    """Saved documents: DIR/torch-<version>.json (PyPI's per-version JSON shape), DIR/wheels/<wheel>.json."""
    wheels = {}
    for p in sorted((directory / "wheels").glob("*.json")) if (directory / "wheels").is_dir() else []:
        reading = json.loads(p.read_text())
        wheels[reading["filename"]] = reading
    out = []
    for p in sorted(directory.glob("torch-*.json")):
        doc = json.loads(p.read_text())
        v = doc["info"]["version"]
        ver = _parse_version(v)
        if ver is None or ver.is_prerelease or ver.is_devrelease or ver < first:
            continue
        names = {f["filename"] for f in doc.get("urls", [])}
        out.append(PyPIVersion(v, doc, {n: w for n, w in wheels.items() if n in names},
                               where=doc.get("source") or PYPI_VERSION_URL.format(version=v)))
    return sorted(out, key=lambda pv: Version(pv.version))


def _parse_version(v: str) -> Optional[Version]:
    try:
        return Version(v)
    except InvalidVersion:
        return None


def _version_key(v: str) -> Tuple[int, Any]:
    parsed = _parse_version(v)
    return (0, parsed) if parsed is not None else (1, v)


def _most_common(values: Iterable[Optional[str]]) -> Optional[str]:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


# --------------------------------------------------------------------------------------- reading the sources

@dataclass
class Read:
    """A source file as read at one release, with its citation."""

    text: str
    cite: str            # "<owner>/<repo>@<sha> <path> (<ref>)"
    channel: str = ""    # test-infra only: the channel to read


class SourceSet:
    """Where the build files of each release are read from: git clones, or a --sources DIR."""

    def __init__(self, pytorch: Optional[Path] = None, builder: Optional[Path] = None,
                 test_infra: Optional[Path] = None, sources: Optional[Path] = None) -> None:
        self.git = {"pytorch/pytorch": pytorch, "pytorch/builder": builder, "pytorch/test-infra": test_infra}
        self.sources = sources
        self._matrix_history: Optional[List[Tuple[str, str, Dict[str, Any]]]] = None

    # -- files at a release
    def read(self, release: str, repo: str, path: str) -> Optional[Read]:
        if self.sources is not None:
            hit = self._read_dir(release, repo, path)
            if hit is not None:
                return hit
        git_dir = self.git.get(repo)
        if git_dir is None or repo == "pytorch/test-infra":
            return None
        refs = [f"v{release}.0"] if repo == "pytorch/pytorch" else [f"release/{release}",
                                                                        f"origin/release/{release}"]
        for ref in refs:
            sha = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
            if not sha:
                continue
            text = _git(git_dir, "show", f"{sha}:{path}", strip=False)
            return Read(text, f"{repo}@{sha} {path} ({ref})") if text is not None else None
        return None

    def _read_dir(self, release: str, repo: str, path: str) -> Optional[Read]:
        base = self.sources / release
        f = base / repo.replace("/", "+") / path
        if not f.is_file():
            return None
        manifest_file = base / "manifest.yaml"
        manifest = yaml.safe_load(manifest_file.read_text()) if manifest_file.is_file() else {}
        meta = (manifest or {}).get(repo) or {}
        if not meta.get("commit"):
            raise ParseError(f"{f}: {manifest_file} names no commit for {repo}")
        ref = f" ({meta['ref']})" if meta.get("ref") else ""
        return Read(f.read_text(), f"{repo}@{meta['commit']} {path}{ref}", str(meta.get("channel", "")))

    # -- the build matrix a release was built with
    def matrix(self, release: str) -> Optional[Read]:
        """test-infra's matrix for a release: the go-live commit on main ("release" channel), else the head of
        release/X.Y ("test" channel, the release candidates)."""
        if self.sources is not None:
            hit = self._read_dir(release, "pytorch/test-infra", MATRIX_PATH)
            if hit is not None:
                if hit.channel not in ("release", "test"):
                    raise ParseError(f"manifest for {release} names no channel for pytorch/test-infra")
                return hit
        git_dir = self.git.get("pytorch/test-infra")
        if git_dir is None:
            return None
        for sha, date, values in self._history(git_dir):
            if str(values.get("CURRENT_STABLE_VERSION", "")).startswith(f"{release}."):
                text = _git(git_dir, "show", f"{sha}:{MATRIX_PATH}", strip=False) or ""
                return Read(text, f"pytorch/test-infra@{sha} {MATRIX_PATH} ({date}, first main commit with "
                                  f"CURRENT_STABLE_VERSION={values['CURRENT_STABLE_VERSION']}, channel release)",
                            "release")
        return self.matrix_rc(release)

    def matrix_rc(self, release: str) -> Optional[Read]:
        """The head of test-infra's release/X.Y branch, "test" channel (its release candidates, patch releases
        included), when its CURRENT_CANDIDATE_VERSION is X.Y.*. Git mode only."""
        git_dir = self.git.get("pytorch/test-infra")
        if git_dir is None:
            return None
        for ref in (f"release/{release}", f"origin/release/{release}"):
            sha = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
            if not sha:
                continue
            text = _git(git_dir, "show", f"{sha}:{MATRIX_PATH}", strip=False)
            candidate = str(py_literals(text).get("CURRENT_CANDIDATE_VERSION", "")) if text else ""
            if candidate.startswith(f"{release}."):
                date = _git(git_dir, "show", "-s", "--format=%cs", sha)
                return Read(text, f"pytorch/test-infra@{sha} {MATRIX_PATH} ({date}, head of {ref}, "
                                  f"CURRENT_CANDIDATE_VERSION={candidate}, channel test)", "test")
        return None

    def _history(self, git_dir: Path) -> List[Tuple[str, str, Dict[str, Any]]]:
        if self._matrix_history is None:
            log = _git(git_dir, "log", "--first-parent", "--reverse", "--format=%H %cs", "--", MATRIX_PATH) or ""
            self._matrix_history = []
            for line in log.splitlines():
                sha, date = line.split()
                try:
                    values = py_literals(_git(git_dir, "show", f"{sha}:{MATRIX_PATH}", strip=False) or "")
                except ParseError:
                    continue
                self._matrix_history.append((sha, date, values))
        return self._matrix_history


def _git(git_dir: Path, *args: str, strip: bool = True) -> Optional[str]:
    proc = subprocess.run(["git", "-C", str(git_dir), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() if strip else proc.stdout


# ------------------------------------------------------------------------------------- arch lists per release

@dataclass
class ArchReading:
    arch: List[str]
    cite: str
    note: str = ""


def _arch_candidates(platform: str, cuda: str) -> List[Tuple[str, str, str]]:
    """(repo, path, kind) of every file that has set TORCH_CUDA_ARCH_LIST for wheel builds, newest layout first."""
    xyz = cuda.replace(".", "")
    if platform == "windows-x86_64":
        return [("pytorch/pytorch", ".ci/pytorch/windows/build_env_setup.py", "table-win"),
                ("pytorch/pytorch", ".ci/pytorch/windows/internal/cuda_config.bat", "cuda-config"),
                ("pytorch/pytorch", f".ci/pytorch/windows/cuda{xyz}.bat", "bat"),
                ("pytorch/builder", f"windows/cuda{xyz}.bat", "bat")]
    out = [("pytorch/pytorch", ".ci/wheel/linux/build_env_setup.py", "table"),
           ("pytorch/pytorch", ".ci/manywheel/build_env_setup.py", "table")]
    if platform == "linux-aarch64":
        out.append(("pytorch/pytorch", ".ci/aarch64_linux/aarch64_ci_build.sh", "aarch64-ci"))
    return out + [("pytorch/pytorch", ".ci/manywheel/build_cuda.sh", "case"),
                  ("pytorch/builder", "manywheel/build_cuda.sh", "case")]


def _arch_from(kind: str, text: str, cuda: str, platform: str) -> Tuple[Optional[List[str]], str]:
    if kind == "table":
        return arch_from_env_setup_table(text, cuda, MACHINE[platform])
    if kind == "table-win":
        return arch_from_env_setup_table(text, cuda, None)
    if kind == "cuda-config":
        return arch_from_cuda_config_bat(text, cuda), ""
    if kind == "bat":
        return arch_from_windows_bat(text), ""
    if kind == "aarch64-ci":
        return arch_from_aarch64_ci_build(text, cuda), ""
    return arch_from_build_cuda_sh(text, cuda, MACHINE[platform]), ""


def read_arch(sources: SourceSet, release: str, cuda: str, platform: str) -> Tuple[Optional[ArchReading], List[str]]:
    """The TORCH_CUDA_ARCH_LIST of one variant on one platform at one release, and the problems met.

    Every candidate file present at the release is read; if two give different lists, which one the build used
    is not known from the files alone, so nothing is returned (the row comes out unconfirmed)."""
    problems: List[str] = []
    readings: List[ArchReading] = []
    for repo, path, kind in _arch_candidates(platform, cuda):
        src = sources.read(release, repo, path)
        if src is None:
            continue
        try:
            arch, note = _arch_from(kind, src.text, cuda, platform)
        except ParseError as exc:
            problems.append(f"{src.cite}: {exc}")
            continue
        if arch:
            readings.append(ArchReading(arch, src.cite, note))
    if not readings:
        return None, problems
    if any(r.arch != readings[0].arch for r in readings[1:]):
        problems.append(f"{variant_of(cuda)} {platform}: build files disagree: " +
                        "; ".join(f"{r.cite} gives {r.arch}" for r in readings))
        return None, problems
    first = readings[0]
    also = "".join(f"; agrees with {r.cite}" for r in readings[1:])
    return ArchReading(first.arch, first.cite + also, first.note), problems


# ------------------------------------------------------------------------------------------ one release row

def _ordered_platforms(d: Dict[str, Any]) -> Dict[str, Any]:
    return {p: d[p] for p in PLATFORMS if p in d}


def pypi_view(versions: Sequence[PyPIVersion]) -> Dict[str, Any]:
    """What PyPI says of one minor release: versions, date, Requires-Python, Python minors and the PyPI variant
    per platform (from the wheel's torch/version.py where it was read, else from Requires-Dist)."""
    first = versions[0]
    row: Dict[str, Any] = {"versions": [pv.version for pv in versions]}
    dates = [str(f.get("upload_time_iso_8601") or f.get("upload_time") or "")[:10] for f in first.files]
    row["date"] = min(d for d in dates if d) if any(dates) else None
    row["requires_python"] = first.doc["info"].get("requires_python") or _most_common(
        f.get("requires_python") for f in first.files)
    notes: List[str] = []
    unconfirmed: List[str] = []
    per_version_python: Dict[str, Dict[str, List[str]]] = {}
    per_version_pypi: Dict[str, Dict[str, str]] = {}
    cites: List[str] = []
    for pv in versions:
        pythons: Dict[str, set] = {}
        for f in pv.files:
            for platform, python in wheel_tags(f["filename"]):
                pythons.setdefault(platform, set()).add(python)
        per_version_python[pv.version] = {p: sorted(s, key=python_sort_key) for p, s in pythons.items()}
        tagged: Dict[Tuple[int, str], List[str]] = {}
        for f in pv.files:
            build, tags = wheel_build_tag(f["filename"]), wheel_tags(f["filename"])
            if build and tags:
                day = str(f.get("upload_time_iso_8601") or f.get("upload_time") or "")[:10]
                tagged.setdefault((build, day), []).append(tags[0][0])
        for (build, day), platforms in sorted(tagged.items()):
            notes.append(f"{pv.version}: {len(platforms)} {'/'.join(sorted(set(platforms)))} wheel(s) uploaded "
                         f"again {day} with wheel build tag {build}; pip prefers them to the untagged ones")
        variants: Dict[str, str] = {}
        read = []
        for platform in PLATFORMS:
            if platform not in pythons:
                continue
            wheel = next((w for w in pv.wheels.values()
                          if any(p == platform for p, _ in wheel_tags(w["filename"]))), None)
            py = sorted(pythons[platform], key=python_sort_key)[0]
            from_requires, _ = cuda_from_requires(pv.doc["info"].get("requires_dist") or [], platform, py)
            if pv.doc["info"].get("requires_dist") is None and wheel is None:
                unconfirmed.append(f"{pv.version} PyPI {platform} CUDA: neither Requires-Dist nor the wheel read")
                continue
            if wheel is not None:
                cuda = wheel["version_py"].get("cuda")
                variant = variant_of(cuda) if cuda else "cpu"
                local = str(wheel["version_py"].get("__version__", "")).partition("+")[2]
                if local and local != variant:
                    raise ParseError(f"{wheel['filename']}: version.py cuda={cuda} but __version__ +{local}")
                if wheel.get("requires_dist") is not None:
                    from_requires, _ = cuda_from_requires(wheel["requires_dist"], platform, py)
                if from_requires != variant:
                    notes.append(f"{pv.version} {platform}: the wheel is {variant} (torch/version.py) but its "
                                 f"Requires-Dist pulls {from_requires}")
                read.append(f"{wheel['filename']} torch/version.py {wheel['version_py'].get('__version__')} "
                            f"git_version {wheel['version_py'].get('git_version')}")
            else:
                variant = from_requires
            variants[platform] = variant
        per_version_pypi[pv.version] = variants
        cites.append(f"{pv.where}" + (f"; wheels read: {'; '.join(read)}" if read else ""))
    base = per_version_python[first.version]
    row["python"] = _ordered_platforms(base)
    differ = {v: _ordered_platforms(p) for v, p in per_version_python.items() if p != base}
    if differ:
        row["python_by_version"] = differ
    row["pypi"] = _ordered_platforms(per_version_pypi[first.version])
    for v, p in per_version_pypi.items():
        if p != per_version_pypi[first.version]:
            notes.append(f"{v} PyPI wheels are {p}, unlike {first.version}")
    return {"row": row, "notes": notes, "unconfirmed": unconfirmed, "cite": " | ".join(cites)}


def wheel_arch(versions: Sequence[PyPIVersion]) -> Dict[Tuple[str, str], Tuple[List[str], str, List[str]]]:
    """(variant, platform) -> (arch list, citation, other versions' differences) from the PyPI wheels read."""
    found: Dict[Tuple[str, str], Tuple[List[str], str, List[str]]] = {}
    for pv in versions:
        for w in pv.wheels.values():
            if not w.get("arch_flags"):
                continue
            cuda = w["version_py"].get("cuda")
            platform = wheel_tags(w["filename"])[0][0]
            key = (variant_of(cuda), platform)
            arch = arch_from_wheel_flags(w["arch_flags"])
            cite = (f"PyPI wheel {w['filename']} {w.get('arch_flags_member', 'torch/lib/libtorch_python.so')} "
                    f"arch flags \"{w['arch_flags']}\"")
            if key not in found:
                found[key] = (arch, cite, [])
            elif arch != found[key][0]:
                found[key][2].append(f"{pv.version} wheel carries {arch}")
    return found


@dataclass
class _Row:
    """One release's row while it is being built, with its notes, unconfirmed items and citations."""

    release: str
    data: Dict[str, Any]
    notes: List[str]
    unconfirmed: List[str]
    sources: Dict[str, str]


def _built_variants(row: _Row, sources: SourceSet) -> Dict[str, List[str]]:
    """variant -> platforms it was built for: test-infra's matrix (cross-checked against the release candidates'
    matrix where there is one), plus the builds PyPI's own wheels are."""
    built: Dict[str, List[str]] = {}
    try:
        matrix = sources.matrix(row.release)
        by_platform = matrix_cuda_by_platform(py_literals(matrix.text), matrix.channel, matrix.text) \
            if matrix is not None else None
    except ParseError as exc:
        matrix, by_platform = None, None
        row.notes.append(f"test-infra matrix not understood: {exc}")
    if matrix is not None and by_platform is not None:
        for platform, cudas in by_platform.items():
            for cuda in cudas:
                built.setdefault(variant_of(cuda), []).append(platform)
        row.sources["variants"] = f"{matrix.cite}: {matrix_summary(by_platform)}"
        if matrix.channel == "release":
            _compare_candidates(row, sources, by_platform)
    else:
        row.unconfirmed.append("variants: no pytorch/test-infra build matrix read for this release; only the "
                               "variants of the PyPI wheels are listed")
    for platform, variant in row.data["pypi"].items():
        if variant != "cpu" and platform not in built.get(variant, []):
            built.setdefault(variant, []).append(platform)
            if matrix is not None:
                row.notes.append(f"{variant} {platform}: the PyPI wheel is this build, but the test-infra matrix "
                                 f"does not list it")
    return built


def _compare_candidates(row: _Row, sources: SourceSet, by_platform: Dict[str, List[str]]) -> None:
    """Note where the release candidates' matrix (head of test-infra release/X.Y) differs from go-live."""
    rc = sources.matrix_rc(row.release)
    if rc is None:
        return
    try:
        rc_platform = matrix_cuda_by_platform(py_literals(rc.text), rc.channel, rc.text)
    except ParseError as exc:
        row.notes.append(f"{rc.cite}: not understood: {exc}")
        return
    if rc_platform == by_platform:
        row.sources["variants"] += f"; the candidates' matrix at {rc.cite} lists the same"
        return
    for platform, cudas in rc_platform.items():
        for cuda in (c for c in cudas if c not in by_platform[platform]):
            row.unconfirmed.append(f"variant {variant_of(cuda)} {platform}: built for the release candidates "
                                   f"({rc.cite}) but not in the release channel at go-live; whether it was "
                                   f"published for {row.release} is not shown by these files, so it is not listed")
        for cuda in (c for c in by_platform[platform] if c not in cudas):
            row.notes.append(f"{variant_of(cuda)} {platform}: in the release channel at go-live but not in "
                             f"the candidates' matrix at {rc.cite}")


def _variant_entry(row: _Row, variant: str, platforms: Sequence[str], sources: SourceSet,
                   wheels: Dict[Tuple[str, str], Tuple[List[str], str, List[str]]],
                   code_cc: Optional["CodeCC"] = None) -> Dict[str, Any]:
    """cuda, platforms, and the arch list of each platform with its source, by rank: the PyPI wheel of that build
    if it was read (exact, PTX included); the build files of this release; the release's own validated
    PYTORCH_RELEASES_CODE_CC (cubins only). Each lower-ranked source that was read is checked against the
    chosen one; build files and PYTORCH_RELEASES_CODE_CC that disagree leave the list unconfirmed."""
    cuda = cuda_of(variant)
    entry: Dict[str, Any] = {"cuda": cuda, "platforms": [p for p in PLATFORMS if p in platforms],
                             "arch": {}, "source": {}}
    for platform in entry["platforms"]:
        reading, problems = read_arch(sources, row.release, cuda, platform)
        row.notes.extend(problems)
        wheel = wheels.get((variant, platform))
        claimed = code_cc.arch(cuda, platform) if code_cc is not None else None
        if wheel is not None:
            entry["arch"][platform], entry["source"][platform] = wheel[0], wheel[1]
            row.notes.extend(f"{variant} {platform}: {d}" for d in wheel[2])
            if reading is not None and reading.arch != wheel[0]:
                row.notes.append(f"{variant} {platform}: {reading.cite} gives {reading.arch}, the wheel carries "
                                 f"{wheel[0]}; the wheel is kept")
            elif reading is not None:
                entry["source"][platform] += f"; agrees with {reading.cite}"
            if claimed is not None and claimed != _cubins(wheel[0]):
                row.notes.append(f"{variant} {platform}: PYTORCH_RELEASES_CODE_CC says {claimed}, the wheel carries "
                                 f"{wheel[0]}; the wheel is kept")
        elif reading is not None and claimed is not None and claimed != _cubins(reading.arch):
            row.unconfirmed.append(f"{variant} {platform} arch list: {reading.cite} gives {reading.arch} but "
                                   f"{code_cc.cite} says {claimed}")
        elif reading is not None:
            entry["arch"][platform] = reading.arch
            entry["source"][platform] = reading.cite + (f" [{reading.note}]" if reading.note else "") + \
                ("; its cubins agree with PYTORCH_RELEASES_CODE_CC" if claimed is not None else "")
        elif claimed is not None:
            entry["arch"][platform] = claimed
            entry["source"][platform] = (f"{code_cc.cite}[{cuda!r}][{MACHINE[platform]!r}] (cubins only; "
                                         f"comment: {code_cc.comment})")
            row.unconfirmed.append(f"{variant} {platform} PTX: PYTORCH_RELEASES_CODE_CC lists cubins only, so the "
                                   f"list is given without +PTX; whether this build embeds PTX was not read")
        else:
            row.unconfirmed.append(
                f"{variant} {platform} arch list: no build file of {row.release} that sets it was read"
                + (", and the PyPI wheel of this build was not read" if row.data["pypi"].get(platform) == variant
                   else ""))
    if not entry["arch"]:
        del entry["arch"], entry["source"]
    return entry


def _cubins(arch: Sequence[str]) -> List[str]:
    return [a.replace("+PTX", "") for a in arch]


@dataclass
class CodeCC:
    """A release's own PYTORCH_RELEASES_CODE_CC, as read from one of its wheels."""

    per_host: bool          # {cuda: {host: ccs}}; False: the older union of hosts {cuda: ccs}
    validated: bool         # its comment says a validator keeps it in sync with the build table
    table: Dict[str, Any]
    comment: str
    cite: str

    def arch(self, cuda: str, platform: str) -> Optional[List[str]]:
        """The cubin list of one build, usable as an arch list only in the validated per-host form."""
        if not (self.per_host and self.validated):
            return None
        ccs = (self.table.get(cuda) or {}).get(MACHINE[platform]) if platform.startswith("linux") else None
        return arch_from_cc_ints(ccs) if ccs else None

    def view(self) -> Dict[str, Any]:
        """The table in the output's terms: {cuda: {platform: arch list}} (or {cuda: arch list} for a union)."""
        def side(ccs: Any) -> Any:
            if not isinstance(ccs, dict):
                return arch_from_cc_ints(ccs)
            return {p: arch_from_cc_ints(ccs[MACHINE[p]]) for p in PLATFORMS if MACHINE[p] in ccs}
        return {"form": "per-host" if self.per_host else "union of hosts", "comment": self.comment,
                "cuda": {cuda: side(self.table[cuda]) for cuda in sorted(self.table, key=Version)}}


def code_cc_of(versions: Sequence[PyPIVersion]) -> Optional[CodeCC]:
    """PYTORCH_RELEASES_CODE_CC from the first wheel of the release (X.Y.0 first) that was read and has one."""
    for pv in versions:
        for w in sorted(pv.wheels.values(), key=lambda w: ("x86_64" not in w["filename"], w["filename"])):
            table = w.get("releases_code_cc")
            if table:
                comment = w.get("releases_code_cc_comment", "")
                return CodeCC(all(isinstance(v, dict) for v in table.values()),
                              "validator" in comment.lower() or "validate" in comment.lower(), table, comment,
                              f"PyPI wheel {w['filename']} torch/cuda/__init__.py PYTORCH_RELEASES_CODE_CC")
    return None


def build_release(release: str, versions: Sequence[PyPIVersion], sources: SourceSet) -> Dict[str, Any]:
    """One release's row of the table."""
    view = pypi_view(versions)
    row = _Row(release, view["row"], list(view["notes"]), list(view["unconfirmed"]), {"pypi": view["cite"]})
    built = _built_variants(row, sources)
    wheels = wheel_arch(versions)
    code_cc = code_cc_of(versions)
    variants = {v: _variant_entry(row, v, built[v], sources, wheels, code_cc)
                for v in sorted(built, key=lambda v: Version(cuda_of(v)))}
    row.data["variants"] = variants
    row.data["af_targets"] = sorted({f"{v} {p} {a}" for v, e in variants.items()
                                     for p, arch in e.get("arch", {}).items() for a in af_targets(arch)})
    if code_cc is not None:
        row.data["code_cc"] = code_cc.view()
        row.sources["code_cc"] = code_cc.cite

    release_md = sources.read(release, "pytorch/pytorch", "RELEASE.md")
    matrix_row = release_matrix_row(release_md.text, release) if release_md is not None else None
    if matrix_row is not None:
        row.data["matrix"] = matrix_row
        row.sources["matrix"] = f"{release_md.cite} \"Release Compatibility Matrix\" row {release}"
    else:
        row.unconfirmed.append("matrix: pytorch/pytorch RELEASE.md \"Release Compatibility Matrix\" row not read"
                               + (f" (no {release} row in {release_md.cite})" if release_md is not None else ""))
    row.sources["arch"] = "see variants.<variant>.source" if any("source" in e for e in variants.values()) \
        else "none read"
    row.data["sources"] = row.sources
    if row.notes:
        row.data["notes"] = row.notes
    if row.unconfirmed:
        row.data["unconfirmed"] = row.unconfirmed
    return row.data


def build_table(pypi: Sequence[PyPIVersion], sources: SourceSet, command: str, date: str) -> Dict[str, Any]:
    by_minor: Dict[str, List[PyPIVersion]] = {}
    for pv in pypi:
        v = Version(pv.version)
        by_minor.setdefault(f"{v.major}.{v.minor}", []).append(pv)
    releases = {}
    for minor in sorted(by_minor, key=Version, reverse=True):
        versions = sorted(by_minor[minor], key=lambda pv: Version(pv.version))
        releases[minor] = build_release(minor, versions, sources)
    return {"schema": 2, "generated": {"by": command, "date": date}, "index_url": INDEX_URL,
            "platforms": list(PLATFORMS), "releases": releases}


HEADER = """\
# PyTorch wheels per release: PyPI's own wheel, the download.pytorch.org/whl/<variant> builds and the
# TORCH_CUDA_ARCH_LIST each was built with ("X.Y" = sm_XY cubin, "X.Y+PTX" = also compute_XY PTX,
# "X.Ya"/"X.Yf" = arch-/family-specific target). GENERATED - do not edit; regenerate with:
#   {command}
# on {date}. Sources: PyPI (JSON API and, with --inspect-wheels, the wheels' torch/version.py and compiled arch
# list), pytorch/test-infra tools/scripts/generate_binary_build_matrix.py, pytorch/pytorch and pytorch/builder
# build scripts at each release; every release names the commits it was read from.
# A PyPI wheel is the download.pytorch.org build its torch/version.py names (+cuXYZ); its arch list is that variant's.
# Semantics: variants.<v>.platforms = where the matrix (or PyPI) says <v> was built; variants.<v>.arch has a
# platform only where its list was read for that release - a built platform missing from arch is named in
# `unconfirmed`, never filled from a neighbouring release.
"""


class _Dumper(yaml.SafeDumper):
    """Block mappings, one-line lists of scalars, no line wrapping."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (dict, list)) for x in data) and sum(len(str(x)) for x in data) < 160
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump(table: Dict[str, Any]) -> str:
    body = yaml.dump(table, Dumper=_Dumper, sort_keys=False, width=100000, allow_unicode=True,
                     default_flow_style=False)
    return HEADER.format(command=table["generated"]["by"], date=table["generated"]["date"]) + body


# ------------------------------------------------------------------------------------------------------ CLI

def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help="torch wheel table (doctor/data/torch_wheels.yaml)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pytorch", type=Path, help="pytorch/pytorch git clone (tags vX.Y.0)")
    p.add_argument("--builder", type=Path, help="pytorch/builder git clone (branches release/X.Y)")
    p.add_argument("--test-infra", type=Path, help="pytorch/test-infra git clone (full history)")
    p.add_argument("--sources", type=Path, help="build files assembled per release (see above)")
    p.add_argument("--pypi-dir", type=Path, help="saved PyPI documents (default: the live JSON API)")
    p.add_argument("--save-pypi", type=Path, help="write what was read from PyPI here (for --pypi-dir)")
    p.add_argument("--inspect-wheels", action="store_true",
                   help="live: read torch/version.py and the compiled arch list of one wheel per platform")
    p.add_argument("--first", default="2.4", help="oldest release in the table (default 2.4)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--date", default=_dt.date.today().isoformat(), help="generated.date (default: today)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out would change")
    return p


def _command(args: argparse.Namespace) -> str:
    parts = ["python scripts/refresh_data.py torch"]
    for flag in ("pytorch", "builder", "test_infra", "sources", "pypi_dir"):
        value = getattr(args, flag)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {value}")
    if args.inspect_wheels:
        parts.append("--inspect-wheels")
    if args.first != "2.4":
        parts.append(f"--first {args.first}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    log = (lambda msg: print(msg, file=sys.stderr))
    first = Version(args.first)
    if args.pypi_dir is not None:
        pypi = load_pypi_dir(args.pypi_dir, first)
    else:
        pypi = load_pypi_live(first, args.inspect_wheels, args.save_pypi, log)
    if not pypi:
        print("no torch release found on PyPI at or after", args.first, file=sys.stderr)
        return 1
    sources = SourceSet(args.pytorch, args.builder, args.test_infra, args.sources)
    try:
        text = dump(build_table(pypi, sources, _command(args), args.date))
    except ParseError as exc:
        print(f"refresh torch: {exc}", file=sys.stderr)
        return 1
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(pypi)} versions)", file=sys.stderr)
    return 0
