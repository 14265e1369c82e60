"""Fuzz kit for tests/test_fuzz.py: hostile inputs for doctor, a runner with bounded time and memory, and the
contract checker of the issue "Safe with hostile input".

The contract, for ANY input: no Python traceback, no "check crashed", no "internal error" (those mean a bug of
doctor's own), exit code 0, 1, 2 or 3 (3 only with a "could not decide" result), exit 2 with exactly one line on
stderr, and bounded time and memory.

Inputs are built from doctor's own seeds (shipped profiles, the recorded facts snapshot and factsbuilder's GPU
box, the shipped model configs, the argparse definitions) by a mutator whose every choice comes from a `Draw`
(hypothesis' `st.data()` in the tests, so a run is deterministic with `derandomize=True`; `RandomDraw` to replay
by hand). Every case is written under FUZZ_DIR (default /tmp/fuzz); failing cases are copied to
FUZZ_DIR/failures/<kind>-<n>/ (files, argv.txt, stdout, stderr) and each kind's record goes to
FUZZ_DIR/report-<kind>.json (inputs tried, failures by signature, max wall time, max RSS); every input tried is
one line of FUZZ_DIR/inputs-<kind>.jsonl.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
PROFILES_DIR = REPO / "doctor" / "profiles"
MODELS_DIR = REPO / "doctor" / "data" / "models"
FUZZ_DIR = Path(os.environ.get("DOCTOR_FUZZ_DIR", "/tmp/fuzz"))
PER_INPUT_S = 10.0           # the contract's "bounded time", per input
MEM_LIMIT = 2 << 30          # RLIMIT_AS of the isolated (subprocess) runs
SCALE = float(os.environ.get("DOCTOR_FUZZ_SCALE", "1"))   # >1 for longer local runs

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


# ---------------------------------------------------------------------------------------------------------------
# choices


class Draw:
    """Every random choice of the mutator; backed by hypothesis' st.data() in the tests."""

    def __init__(self, data: Any):
        from hypothesis import strategies as st

        self._data, self._st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self._data.draw(self._st.integers(lo, hi))

    def pick(self, seq: Sequence[Any]) -> Any:
        seq = list(seq)
        return seq[self.int(0, len(seq) - 1)]

    def chance(self, k: int) -> bool:
        """True one time in k."""
        return self.int(0, k - 1) == 0


class RandomDraw(Draw):
    """The same choices from random.Random(seed): replay a case outside hypothesis."""

    def __init__(self, seed: int):
        self._rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self._rng.randint(lo, hi)


# ---------------------------------------------------------------------------------------------------------------
# hostile values


class Raw(str):
    """Text written verbatim into the YAML/JSON document (tokens no dumper emits: 400-digit ints, NaN, aliases)."""


def _deep(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = [node]
    return node


ANSI = "\x1b[31mRED\x1b[0m\x1b]0;pwned\x07\x1b[2J"
STRINGS = [
    "", " ", "0", "-1", "1e999", "nan", "inf", "true", "null", "none", "auto", "default", "all-linear",
    ANSI, "line1\nline2\r\nline3", "tab\there", "nul\x00byte", "bidi\u202eevil\u2066x\u200b", "\ufeffbom", "💥" * 40,
    "x" * 5000, "a." * 3000, "?token=" + "t" * 40, "https://user:pw@" + "h" * 300, "%s%n{0}{x}{{", "$(reboot)`id`",
    "../../../../etc/passwd", "/dev/zero", "/proc/self/mem", "~", "~nobody/x", ".", "/", "C:\\\\x", "-", "--help",
    "internal", "A800", "NVIDIA A800-SXM4-80GB", "8.0", "9.0a", "12.8", "570.124.06", "2.9.0+cu128", ">=1,<", "!!",
    "sm_80", "q_proj", "eager", "flash", "bf16", "qlora", "nanochat-d0",
]
NUMBERS = [0, -1, 1, 2, 3, 7, -2**63, 2**31, 2**63, 2**64 + 1, 10**18, 10**30, 0.5, -0.0, 1e-9, 5e-324, 1e308,
           -1e308, 1.5, 123456789.123]


def raw_numbers(yaml_mode: bool) -> list[Raw]:
    out = [Raw("1" * 400), Raw("-" + "9" * 400), Raw("1" * 5000), Raw("1e400"), Raw("-1e400"),
           Raw("1" + "0" * 330 + ".5")]
    if yaml_mode:
        out += [Raw(".nan"), Raw(".inf"), Raw("-.inf"), Raw("0x" + "f" * 40), Raw("1_000"), Raw("0o777"),
                Raw("190:20:30"), Raw("2024-01-01"), Raw("2024-01-01 12:00:00"), Raw("!!binary aGVsbG8="),
                Raw("!!float 1e400"), Raw("!!int '0x10'"), Raw("!!set {a, b}"), Raw("!!python/name:os.system"),
                Raw("*undefined_alias"), Raw("yes"), Raw("off"), Raw("~")]
    else:
        out += [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1E+9999"), Raw("-0"), Raw("0e0")]
    return out


def hostile(d: Draw, yaml_mode: bool, like: Any = None) -> Any:
    """A value to put where `like` was."""
    kind = d.int(0, 9)
    if kind <= 2 and isinstance(like, (int, float)) and not isinstance(like, bool):
        n = like
        return d.pick([0, -n if n else -1, n * 10**6, n * 10**20, float(n) + 0.5, str(n), -1, 0.0, n * 2**64,
                       Raw(str(abs(int(n))) + "0" * 400), [n], {"value": n}, None, True])
    if kind <= 2 and isinstance(like, str):
        return d.pick([like * 200, like + ANSI, like + "\n" + like, like.upper(), "", None, 1, [like], {like: like},
                       like + "\x00", like[::-1], " " + like + " "])
    if kind == 3:
        return d.pick(raw_numbers(yaml_mode))
    if kind == 4:
        return d.pick(NUMBERS)
    if kind == 5:
        return d.pick([None, True, False])
    if kind == 6:
        return d.pick([[], {}, [None], {"": None}, [1, "a", None], {"a": {"b": {"c": [1]}}}, list(range(2000)),
                       {f"k{i}": i for i in range(500)}, _deep(40), _deep(80), {"1": 1, "2": [2]},
                       [{}] * 50])
    return d.pick(STRINGS)


# ---------------------------------------------------------------------------------------------------------------
# serialising with raw tokens


def _prep(node: Any, raws: dict[str, str]) -> Any:
    if isinstance(node, Raw):
        key = f"RAWTOKEN{len(raws)}X"
        raws[key] = str(node)
        return key
    if isinstance(node, dict):
        return {(_prep(k, raws) if isinstance(k, Raw) else k): _prep(v, raws) for k, v in node.items()}
    if isinstance(node, list):
        return [_prep(v, raws) for v in node]
    return node


def to_json(data: Any) -> str:
    raws: dict[str, str] = {}
    text = json.dumps(_prep(data, raws), ensure_ascii=False, indent=1, allow_nan=True)
    for key, token in raws.items():
        text = text.replace(json.dumps(key), token)
    return text


def to_yaml(data: Any) -> str:
    raws: dict[str, str] = {}
    text = yaml.safe_dump(_prep(data, raws), sort_keys=False, allow_unicode=True, width=10**9)
    for key, token in raws.items():
        text = re.sub(rf"(['\"]?){key}\1", lambda _m, t=token: t, text)
    return text


# ---------------------------------------------------------------------------------------------------------------
# generic structural mutation of a JSON/YAML document


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.keys())
    if isinstance(node, list):
        return list(range(len(node)))
    return []


def pick_slot(d: Draw, doc: Any, prefer: Sequence[str] = ()) -> tuple[Any, Any, str] | None:
    """(container, key, dotted path) of a random node below the root, descending from the root (so every
    section is about equally likely, whatever its size); `prefer` names top-level keys to start from."""
    node, path = doc, ""
    if prefer and isinstance(doc, dict) and d.chance(2):
        keys = [k for k in prefer if k in doc]
        if keys:
            key = d.pick(keys)
            if not _children(doc[key]) or d.chance(4):
                return doc, key, str(key)
            node, path = doc[key], str(key)
    parent = None
    key: Any = None
    while True:
        kids = _children(node)
        if not kids or (parent is not None and d.chance(3)):
            break
        parent, key = node, d.pick(kids)
        path = f"{path}.{key}" if path else str(key)
        node = node[key]
    return (parent, key, path) if parent is not None else None


def mutate(d: Draw, doc: Any, yaml_mode: bool, prefer: Sequence[str] = ()) -> str:
    """One structural mutation in place; returns its description."""
    slot = pick_slot(d, doc, prefer)
    if slot is None:
        return "no-op"
    parent, key, path = slot
    old = parent[key]
    op = d.int(0, 11)
    if op <= 2:
        parent[key] = same_type(d, old, yaml_mode)
        return f"set {path} = {_short(parent[key])} (same type)"
    if op <= 5:
        parent[key] = hostile(d, yaml_mode, old)
        return f"set {path} = {_short(parent[key])}"
    if op == 5 and isinstance(parent, dict):
        del parent[key]
        return f"drop {path}"
    if op == 5 and isinstance(parent, list):
        parent.pop(key)
        return f"drop {path}"
    if op == 6:   # a container of the other kind, or a string, where a container was (or the reverse)
        if isinstance(old, dict):
            parent[key] = d.pick([list(old.values()), list(old.items()), str(old), 1, None])
        elif isinstance(old, list):
            parent[key] = d.pick([{str(i): v for i, v in enumerate(old)}, ",".join(map(str, old)), old[:1], None])
        else:
            parent[key] = d.pick([{"value": old}, [old], [old, old]])
        return f"retype {path} -> {type(parent[key]).__name__}"
    if op == 7 and isinstance(old, dict):
        new = d.pick(["unknown_key", "", "0", "__proto__", ANSI, "x" * 300, "id", "path", "name"])
        old[new] = hostile(d, yaml_mode)
        return f"add key {path}.{new!r}"
    if op == 7 and isinstance(old, list) and old:
        times = d.pick([2, 10, 300, 1500])
        parent[key] = (old * times)[: max(len(old), 3000)]
        return f"repeat {path} x{times}"
    if op == 8 and isinstance(old, str):
        parent[key] = d.pick([old[: len(old) // 2], old + old[-1:] * 1000, old.replace(".", ""), old + "\x1b[0m",
                              old.encode("utf-8", "replace").hex()])
        return f"edit string {path}"
    parent[key] = hostile(d, yaml_mode)
    return f"set {path} = {_short(parent[key])}"


def same_type(d: Draw, old: Any, yaml_mode: bool) -> Any:
    """A value of the type `old` has (what a schema lets through), hostile in content."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return d.pick([0, -1, -old, old * 10**9, 2**63, 10**30, Raw("1" * 400), 1])
    if isinstance(old, float):
        return d.pick([0.0, -1.0, -old, 1e308, -1e308, 5e-324, old * 1e300, Raw("1" * 400), Raw("1e400")])
    if isinstance(old, str):
        return d.pick(STRINGS + [old * 50, old + ANSI, old + "\n" + old, old.upper(), old[:1]])
    if isinstance(old, list):
        return d.pick([[], old * 100, old[:1], [old[0]] * 3 if old else [None], [same_type(d, v, yaml_mode) for v in old]])
    if isinstance(old, dict):
        return d.pick([{}, {k: same_type(d, v, yaml_mode) for k, v in old.items()}])
    return hostile(d, yaml_mode)


def _short(value: Any, limit: int = 50) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------------
# running doctor and checking the contract


@dataclass
class Outcome:
    argv: list[str]
    rc: Any
    out: str
    err: str
    wall_s: float
    rss_kib: int                 # peak RSS: the child's own for isolated runs, this process's for in-process ones
    timed_out: bool = False
    escaped: str | None = None   # a traceback that left doctor.cli.main (in-process runs)
    isolated: bool = False


class _Timeout(BaseException):
    """Raised by SIGALRM in an in-process run (a BaseException: doctor's `except Exception` cannot eat it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def run_inprocess(argv: Sequence[str], timeout: float = PER_INPUT_S, debug: bool = False) -> Outcome:
    """doctor.cli.main(argv) with stdout/stderr captured, a SIGALRM time limit and the peak RSS afterwards."""
    from doctor.cli import main

    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    rc: Any = None
    timed_out, escaped = False, None
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main((["--debug"] if debug else []) + argv)
            except SystemExit as exc:      # argparse: usage errors and --help
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _Timeout:
        timed_out = True
    except BaseException:  # noqa: BLE001 - whatever escapes main is a contract violation, recorded
        escaped = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    wall = time.perf_counter() - t0
    return Outcome(argv, rc, out.getvalue(), err.getvalue(), wall,
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, timed_out, escaped)


_CHILD = r"""
import os, resource, sys
sys.path.insert(0, os.environ["FUZZ_REPO"])
rc = 3
try:
    from doctor.cli import main
    try:
        rc = main(sys.argv[1:])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
finally:
    sys.stdout.flush(); sys.stderr.flush()
    with open(os.environ["FUZZ_RSS"], "w") as fh:
        fh.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.exit(rc)
"""


def _limits(mem: int) -> Callable[[], None]:
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


_RUNS = itertools.count()


def run_isolated(argv: Sequence[str], timeout: float = PER_INPUT_S, mem: int = MEM_LIMIT,
                 env: dict[str, str] | None = None) -> Outcome:
    """`python -m doctor argv` in a child with RLIMIT_AS = mem and a wall-clock limit (its process group killed)."""
    argv = [str(a) for a in argv]
    FUZZ_DIR.mkdir(parents=True, exist_ok=True)
    rss_file = FUZZ_DIR / f"rss-{os.getpid()}-{next(_RUNS)}.txt"   # one per run: runs may go in parallel
    child_env = dict(os.environ, FUZZ_REPO=str(REPO), FUZZ_RSS=str(rss_file), HF_HUB_OFFLINE="1",
                     PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=child_env, preexec_fn=_limits(mem), cwd=str(FUZZ_DIR))
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    try:
        rss = int(rss_file.read_text())
    except (OSError, ValueError):
        rss = -1                 # killed before it could say
    rss_file.unlink(missing_ok=True)
    return Outcome(argv, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), wall,
                   rss, timed_out, None, isolated=True)


def violations(o: Outcome, command: str = "") -> list[str]:
    """The contract's breaches in one outcome, each as 'class: detail'."""
    found: list[str] = []
    text = o.out + "\n" + o.err
    if o.escaped:
        last = o.escaped.strip().splitlines()[-1]
        found.append(f"exception escaped main: {last}")
    if "Traceback (most recent call last)" in text:
        found.append("traceback printed: " + _line_with(text, "Error") if "Error" in text else "traceback printed")
    if "check crashed" in text:
        found.append("check crashed: " + _line_with(text, "check crashed"))
    if "internal error" in text:
        found.append("internal error: " + _line_with(text, "internal error"))
    if o.timed_out:
        found.append(f"timeout: no exit after {o.wall_s:.1f} s")
    elif o.wall_s > PER_INPUT_S:
        found.append(f"slow: {o.wall_s:.1f} s (limit {PER_INPUT_S:g} s)")
    if not o.timed_out and not o.escaped and o.rc not in (0, 1, 2, 3):
        found.append(f"exit code {o.rc}" + (" (killed: memory limit?)" if isinstance(o.rc, int) and o.rc < 0 else ""))
    if o.rc == 2:
        lines = o.err.rstrip("\n").split("\n") if o.err.strip() else []
        if len(lines) != 1:
            found.append(f"exit 2 with {len(lines)} stderr lines: " + " | ".join(l[:100] for l in lines[-2:]))
    if o.rc == 3 and command == "check" and "could not decide" not in text and '"exit_code": 3' not in text \
            and "internal error" not in text:
        found.append("exit 3 without a 'could not decide' result")
    return found


def notes(o: Outcome) -> list[str]:
    """Things worth a look that the contract does not name (recorded, not asserted)."""
    found = []
    if o.rc == 2 and o.err and not o.err.startswith("doctor"):
        found.append("exit-2 line does not start with 'doctor'")
    longest = max((len(l) for l in o.err.splitlines()), default=0)
    if longest > 2000:
        found.append(f"stderr line of {longest} characters")
    if "\x1b" in o.out or "\x1b" in o.err:
        found.append("raw ESC (ANSI escape) printed")
    return found


def _line_with(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line:
            return line.strip()[:300]
    return ""


def signature(violation: str) -> str:
    """A violation with its variable parts (numbers, quoted values, paths) blanked: one per distinct failure."""
    v = re.sub(r"/tmp/\S*|/work/\S*", "<path>", violation)
    v = re.sub(r"'[^']*'|\"[^\"]*\"", "<q>", v)
    v = re.sub(r"\d+(\.\d+)?", "N", v)
    v = re.sub(r"(\[[?✗!✓-]\] )?(\S+): check crashed", r"\2: check crashed", v)
    return v[:160]


def where(exc_tb: str) -> str:
    """'doctor/x.py:123 in func' for the innermost frame of doctor's own code in a traceback."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', exc_tb)
    mine = [(f, n, fn) for f, n, fn in frames if "/doctor/" in f and "/tests/" not in f]
    if not mine:
        return "?"
    f, n, fn = mine[-1]
    return f"{f[f.rindex('/doctor/') + 1:]}:{n} in {fn}"


def locate_internal_error(argv: Sequence[str]) -> str:
    """Rerun with --debug: main re-raises, the traceback names the place."""
    o = run_inprocess(argv, debug=True)
    return where(o.escaped or "") if o.escaped else "?"


def locate_check_crash(facts_path: str, refs: list[str]) -> dict[str, str]:
    """check id -> where it raised: the profile's checks called directly, as runner.run_check does."""
    from doctor import facts as facts_mod
    from doctor.facts import MissingSection, section
    from doctor.profile import load
    from doctor.registry import discover
    from doctor.runner import params_for

    out: dict[str, str] = {}
    try:
        registry = discover()
        facts = facts_mod.load(facts_path)
        profile = load(refs, registry)
    except Exception as exc:  # noqa: BLE001
        return {"?": f"{type(exc).__name__}: {exc}"}
    for entry in profile.checks:
        spec = registry.checks[entry["id"]]
        values, missing = params_for(spec, entry, profile)
        if missing:
            continue
        try:
            for name in spec.needs:
                section(facts, name)
            spec.func(facts, **values)
        except MissingSection:
            continue
        except Exception as exc:  # noqa: BLE001
            out[spec.id] = f"{where(traceback.format_exc())} ({type(exc).__name__}: {str(exc)[:120]})"
    return out


# ---------------------------------------------------------------------------------------------------------------
# the record of one fuzz kind


@dataclass
class Case:
    argv: list[str]
    files: list[Path] = field(default_factory=list)      # inputs to keep with a failure
    what: str = ""                                        # the mutations, in words
    command: str = ""
    isolated: bool = False
    facts: str | None = None                              # for locating check crashes
    refs: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)        # on exit 2 the line must name one of these (file or flag)


def unnamed(o: Outcome, case: Case) -> list[str]:
    """An exit-2 line that names none of the case's files nor any --flag (the contract: name the file or flag)."""
    if o.rc != 2 or not case.names:
        return []
    shown = {n for n in case.names if n in o.err or excerpt_of(n) in o.err}
    return [] if shown else [f"exit 2 naming no file or flag: {o.err.strip()[:200]}"]


def excerpt_of(text: str) -> str:
    """How doctor shows a long or odd path (doctor.loading.excerpt without its quotes)."""
    from doctor.loading import excerpt

    return excerpt(text, 200)[1:-1]


class Recorder:
    """Runs cases, checks the contract, keeps the first few failing inputs per distinct failure."""

    KEEP = 3

    def __init__(self, kind: str):
        self.kind = kind
        self.tried = 0
        self.max_wall = (0.0, [])
        self.max_rss = (0, [])
        self.rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.failures: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        self.exit_codes: dict[str, int] = {}
        self.bad_input: dict[str, int] = {}     # exit-2 messages (signatures), to see what the mutator reaches
        self.dir = FUZZ_DIR / "failures"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.inputs_log = FUZZ_DIR / f"inputs-{kind}.jsonl"     # every input tried: argv, mutations, exit, time
        self.inputs_log.unlink(missing_ok=True)

    def run(self, case: Case) -> Outcome:
        o = run_isolated(case.argv) if case.isolated else run_inprocess(case.argv)
        self.tried += 1
        with open(self.inputs_log, "a") as fh:
            fh.write(json.dumps({"argv": [a[:300] for a in case.argv], "what": case.what[:400], "rc": o.rc,
                                 "wall_s": round(o.wall_s, 4), "rss_kib": o.rss_kib}) + "\n")
        self.exit_codes[str(o.rc)] = self.exit_codes.get(str(o.rc), 0) + 1
        if o.rc == 2:
            msg = signature(o.err.strip().split(": ")[-1][:60]) if o.err.strip() else "(empty)"
            self.bad_input[msg] = self.bad_input.get(msg, 0) + 1
        if o.wall_s > self.max_wall[0]:
            self.max_wall = (o.wall_s, case.argv)
        if o.rss_kib > self.max_rss[0]:
            self.max_rss = (o.rss_kib, case.argv)
        for v in violations(o, case.command) + unnamed(o, case):
            for refined, at, sig in self._classify(v, case):
                self._keep(self.failures, refined, case, o, at, sig)
        for n in notes(o):
            self._keep(self.notes, n, case, o, save=False)
        return o

    def _classify(self, v: str, case: Case) -> list[tuple[str, str]]:
        """(violation, where in doctor) pairs: a crashed check per check id, an internal error by its raise site,
        so one bug is one class whatever the output format."""
        if v.startswith("check crashed") and case.facts and not case.isolated:
            located = locate_check_crash(case.facts, case.refs)
            if located and "?" not in located:
                out = []
                for cid, info in sorted(located.items()):
                    at, _, exc = info.partition(" (")
                    out.append((f"check crashed: {cid}: {exc.rstrip(')')}", at,
                                f"check crashed: {cid}: {exc.split(':')[0]} @ {re.sub(r':[0-9]+ ', ' ', at)}"))
                return out
        if v.startswith("internal error") and not case.isolated:
            at = locate_internal_error(case.argv)
            m = re.search(r"internal error: (\w+)", v)
            kind = m.group(1) if m else "?"
            return [(f"internal error: {v.split('internal error: ', 2)[-1]}", at,
                     f"internal error: {kind} @ {re.sub(r':[0-9]+ ', ' ', at)}")]
        return [(v, "", signature(v))]

    def _keep(self, book: dict[str, dict[str, Any]], v: str, case: Case, o: Outcome, at: str = "",
              sig: str = "", save: bool = True) -> None:
        sig = sig or signature(v)
        entry = book.setdefault(sig, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) >= self.KEEP:
            return
        example: dict[str, Any] = {"violation": v, "argv": case.argv, "what": case.what, "rc": o.rc,
                                   "wall_s": round(o.wall_s, 3), "stderr": o.err[-1500:], "stdout_tail": o.out[-800:]}
        if save:
            folder = self.dir / f"{self.kind}-{len(os.listdir(self.dir)):04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for f in case.files:
                if f.is_file() and f.stat().st_size < (4 << 20):
                    shutil.copy(f, folder / f.name)
            (folder / "argv.txt").write_text(" ".join(case.argv) + "\n")
            (folder / "stdout.txt").write_text(o.out[-20000:], errors="replace")
            (folder / "stderr.txt").write_text(o.err[-20000:], errors="replace")
            example["saved"] = str(folder)
            if at:
                example["where"] = at
        entry["examples"].append(example)

    def finish(self) -> str:
        """Write FUZZ_DIR/report-<kind>.json; returns the failures in a few lines ('' when there are none)."""
        report = {"kind": self.kind, "inputs_tried": self.tried, "exit_codes": self.exit_codes,
                  "max_wall_s": round(self.max_wall[0], 3), "max_wall_argv": self.max_wall[1],
                  "max_rss_mib": round(self.max_rss[0] / 1024, 1), "max_rss_argv": self.max_rss[1],
                  "failures": self.failures, "notes": self.notes,
                  "exit_2_messages": dict(sorted(self.bad_input.items(), key=lambda kv: -kv[1]))}
        (FUZZ_DIR / f"report-{self.kind}.json").write_text(json.dumps(report, indent=1, default=str))
        lines = [f"{self.kind}: {self.tried} inputs, {sum(e['count'] for e in self.failures.values())} contract "
                 f"violations in {len(self.failures)} classes; max wall {self.max_wall[0]:.2f} s, "
                 f"max RSS {self.max_rss[0] / 1024:.0f} MiB (report: {FUZZ_DIR}/report-{self.kind}.json)"]
        for sig, entry in self.failures.items():
            ex = entry["examples"][0]
            lines.append(f"  [{entry['count']}x] {ex['violation'][:200]}\n      e.g. doctor {' '.join(ex['argv'])[:300]}"
                         f"  ({ex['what'][:200]})" + (f"\n      at {ex['where']}" if ex.get("where") else ""))
        print("\n".join(lines))
        return "\n".join(lines) if self.failures else ""


# ---------------------------------------------------------------------------------------------------------------
# seeds and the scratch area


class Scratch:
    """FUZZ_DIR/work/<kind>: each case's files, rewritten for every case."""

    def __init__(self, kind: str):
        self.root = FUZZ_DIR / "work" / kind
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.n = 0

    def case_dir(self) -> Path:
        self.n += 1
        folder = self.root / f"c{self.n % 4}"   # a few rotating folders: the last cases stay for a look
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder


def shipped_profiles() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(PROFILES_DIR.glob("*.yaml"))}


def facts_seeds() -> dict[str, dict[str, Any]]:
    import factsbuilder

    seeds = {"cpu-container": factsbuilder.recorded(), "autodl-a800": factsbuilder.autodl_box(),
             "qwen-env": factsbuilder.autodl_box(packages=factsbuilder.QWEN_QLORA_ENV)}
    return seeds


def model_seeds() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(MODELS_DIR.glob("*.json"))}


def write_facts_seeds(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in facts_seeds().items():
        out[name] = folder / f"{name}.json"
        out[name].write_text(json.dumps(data))
    return out


# profile combinations `doctor check` is fuzzed against (machine + job, as users combine them)
CHECK_PROFILES = [["base"], ["cpu-ci"], ["autodl-a800"], ["a800-80g", "qwen3-vl-32b-qlora"],
                  ["a800-80g", "mamba-7b-zero2"], ["nanochat-d20-32g"], ["h100-80g", "opt-hessian"],
                  ["qwen3-vl-32b-awq-inference"], ["rtx4090-24g", "nanochat-d12-32g"], ["v100-32g"]]


# ---------------------------------------------------------------------------------------------------------------
# (1) profiles


def _registry_params() -> dict[str, dict[str, Any]]:
    from doctor.registry import discover

    return {cid: {n: p.type for n, p in spec.params.items()} for cid, spec in discover().checks.items()}


def _value_for_type(d: Draw, tp: Any) -> Any:
    """A value that passes the parameter's type check but is hostile in content."""
    import typing

    origin = typing.get_origin(tp)
    if tp is int:
        return d.pick([0, -1, -2**63, 2**63, 10**30, Raw("1" * 400), 1])
    if tp is float:
        return d.pick([0, -1, 0.0, -1e308, 1e308, 5e-324, Raw("1" * 400), 100, Raw("1e400")])
    if tp is str:
        return d.pick(STRINGS)
    if tp is bool:
        return d.pick([True, False])
    if origin is list:
        return d.pick([[], [""], ["x"] * 300, [ANSI], ["NVIDIA A800-SXM4-80GB", None]])
    if origin is dict:
        return d.pick([{}, {"x": None}, {"path": None}, {"config": 1}, {"loaded": {"text": "{"}},
                       {"a": {"path": "/", "gib": -1}}, {"method": "qlora", "batch": 0}, {"": ""}])
    return hostile(d, True)


def profile_case(d: Draw, scratch: Scratch, seeds: dict[str, str], facts: dict[str, Path],
                 params: dict[str, dict[str, Any]]) -> Case:
    folder = scratch.case_dir()
    name = d.pick(sorted(seeds))
    doc = yaml.safe_load(seeds[name])
    path = folder / f"{name}.yaml"
    shutil.copytree(PROFILES_DIR / "deepspeed", folder / "deepspeed")
    whats: list[str] = [f"from {name}.yaml"]
    files = [path]
    text: str | bytes | None = None
    op = d.int(0, 21)
    if op >= 20:
        op = 13                                    # DeepSpeed configs get a larger share
    job = doc.setdefault("job", {}) if isinstance(doc, dict) else {}
    if op <= 6:                                    # generic mutations of the document
        for _ in range(d.int(1, 3)):
            whats.append(mutate(d, doc, True, prefer=("job", "machine", "checks")))
    elif op == 7:                                  # a check entry: unknown id, unknown or ill-typed param
        cid = d.pick(sorted(params))
        entry: dict[str, Any] = d.pick([{"id": "no.such.check"}, {"id": cid, "params": {"bogus": 1}},
                                        {"params": {}}, {"id": cid, "severity": "fatal"},
                                        {"id": cid, "enabled": "yes"}, {"id": cid, "params": None},
                                        {"id": cid, "params": [1]}, {"id": 5}, {"id": cid, "extra": 1}])
        doc.setdefault("checks", []).append(entry)
        whats.append(f"checks += {_short(entry, 80)}")
    elif op <= 9:                                  # a known param with a value of its type, hostile in content
        cid = d.pick(sorted(c for c in params if params[c]))
        pname = d.pick(sorted(params[cid]))
        value = _value_for_type(d, params[cid][pname])
        doc.setdefault("checks", []).append({"id": cid, "params": {pname: value}})
        whats.append(f"checks += {cid} params.{pname} = {_short(value)}")
    elif op == 10:                                 # the job's storage plan
        store = job.setdefault("storage", {})
        entry = d.pick([{"gib": 10}, {"path": ""}, {"path": "/dev/null", "gib": 1}, {"path": "/", "gib": -5},
                        {"path": "./x", "gib": 1e300}, {"path": "~/x", "count": 0}, {"path": "{run}/ckpt", "gib": 1},
                        {"path": "relative", "gib": Raw("1" * 400)}, {"path": "/proc", "gib": 0, "count": -1},
                        {"path": ANSI, "repo": "a/b"}, {}])
        key = d.pick(["checkpoints", "data", "hf", ANSI, "", "x" * 200])
        store[key] = entry
        whats.append(f"job.storage[{key!r}] = {_short(entry)}")
    elif op == 11:                                 # the workload's numbers and words
        wl = job.setdefault("workload", {})
        key = d.pick(["batch", "sequence", "grad_accum", "world_size", "total_batch_size", "images_per_sample",
                      "image_size", "lora_rank", "depth", "context", "dataloader_workers", "model", "lora_targets",
                      "optimizer", "method", "quantization", "dtype", "attn_implementation", "double_quant"])
        value = d.pick([0, -1, 1, 2**31, 10**12, Raw("1" * 400), Raw("1" * 5000), "", "nomatch", ",", ANSI,
                        "qlora", "awq", "fp32", "flash_attention_2", True, None, "opt-125m", "nanochat-d0",
                        "llama-2-7b", "x/y"])
        wl[key] = value
        whats.append(f"job.workload.{key} = {_short(value)}")
    elif op == 12:                                 # extends: cycles, self, missing, odd refs, long chains
        kind = d.int(0, 4)
        if kind == 0:
            other = folder / "other.yaml"
            other.write_text(to_yaml({"kind": "job", "extends": [str(path)]}))
            doc["extends"] = [str(other)]
            files.append(other)
            whats.append("extends cycle a -> b -> a")
        elif kind == 1:
            doc["extends"] = [str(path)]
            whats.append("extends itself")
        elif kind == 2:
            doc["extends"] = [d.pick(["no-such-profile", "../../etc/passwd", "/dev/zero", "base.yaml", "~", "",
                                      ANSI, "x" * 300, "facts.json", str(facts["autodl-a800"]), "/etc/hostname"])]
            whats.append(f"extends {doc['extends']}")
        elif kind == 3:
            doc["extends"] = ["base"] * d.pick([2, 50])
            whats.append("extends base repeated")
        else:
            doc["extends"] = d.pick(["base", None, [[]], [1], {}, [None]])
            whats.append(f"extends = {doc['extends']!r}")
    elif op == 13:                                 # the DeepSpeed config the job names
        ds = folder / "deepspeed" / "ds.json"
        seed = json.loads((PROFILES_DIR / "deepspeed" / "mamba-7b-zero2-a800.json").read_text())
        variant = d.int(0, 6)
        if variant <= 1:
            for _ in range(d.int(1, 2)):
                whats.append("ds: " + mutate(d, seed, False))
            ds.write_text(to_json(seed))
        elif variant == 2 or variant == 6:     # the batch identity's numbers
            for _ in range(d.int(1, 3)):
                key = d.pick(["train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"])
                seed[key] = d.pick([0, 0, -1, 1, 3, 8, "auto", 1.5, 2**63, Raw("1" * 400), None, "8"])
                whats.append(f"ds: {key} = {_short(seed[key])}")
            if d.chance(2):
                seed.pop(d.pick(["train_batch_size", "train_micro_batch_size_per_gpu",
                                 "gradient_accumulation_steps"]), None)
            ds.write_text(to_json(seed))
        elif variant == 3:
            ds.write_text(d.pick(["", "{", "[" * 5000 + "]" * 5000, '{"a": 1, "a": 2}', "// c\n{}", "null",
                                  '{"train_batch_size": 1' + "0" * 5000 + "}", "\ufeff{}",
                                  '{"train_micro_batch_size_per_gpu": 0, "train_batch_size": 8}',
                                  '{"train_micro_batch_size_per_gpu": 2, "train_batch_size": 8, '
                                  '"gradient_accumulation_steps": 0}', '{"zero_optimization": 1}',
                                  '{"zero_optimization": {"offload_optimizer": []}}']))
            whats.append(f"ds text {ds.read_text()[:60]!r}")
        elif variant == 4:
            ds.write_bytes(b"\xff\xfe{\x00}")
            whats.append("ds not UTF-8")
        ds_ref = d.pick(["deepspeed/ds.json", "deepspeed", "/dev/null", "/dev/zero", "missing.json", "", ".",
                         str(ds)]) if variant == 5 else "deepspeed/ds.json"
        job.setdefault("deepspeed", {})["config"] = ds_ref
        if d.chance(2):
            job.setdefault("workload", {})["world_size"] = d.pick([1, 2, 3, 0, 2**40])
        files.append(ds)
        whats.append(f"job.deepspeed.config = {ds_ref!r}")
    elif op == 14:                                 # machine.gpu
        gpu = doc.setdefault("machine", {}).setdefault("gpu", {}) if isinstance(doc.get("machine", {}), dict) else {}
        key = d.pick(["models", "count", "memory_gib", "memory_tolerance_pct", "compute_capability", "arch", "name"])
        value = d.pick([["no such gpu"], [], 0, -1, 10**12, 1e308, "", "x.y", "8", "99.99", "sm_80", ANSI, [ANSI],
                        Raw("1" * 400), -1e308, "9.0a", "Blackwell"])
        gpu[key] = value
        whats.append(f"machine.gpu.{key} = {_short(value)}")
    else:                                          # text level
        src = to_yaml(doc)
        kind = d.int(0, 10)
        if kind == 0:
            text = ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + src)
            whats.append("billion laughs")
        elif kind == 1:
            cut = d.int(0, max(0, len(src) - 1))
            text = src[:cut]
            whats.append(f"truncated at {cut}")
        elif kind == 2:
            text = src.encode() + d.pick([b"\xff\xfe", b"\xc3\x28", b"\x80"]) + b"\n"
            whats.append("non-UTF-8 bytes")
        elif kind == 3:
            text = src + src.splitlines()[0] + "\n"
            whats.append("duplicate top-level key")
        elif kind == 4:
            text = "description: " + "[" * d.pick([70, 1000, 20000]) + "\n"
            whats.append("deep nesting")
        elif kind == 5:
            text = d.pick(["", "\n", "---\n", "~\n", "[]\n", "42\n", "'str'\n", "---\na: 1\n---\nb: 2\n", "\t",
                           "? [a, b]\n: c\n", "!!python/object:os.system {}\n", "&a [*a]\n", "kind: &k machine\n"
                           "description: *k\n"])
            whats.append(f"document {text!r}")
        elif kind == 6:
            text = "\ufeff" + src.replace("\n", "\r\n")
            whats.append("BOM + CRLF")
        elif kind == 7:
            text = src.replace("  ", "\t", 1)
            whats.append("tab indentation")
        elif kind == 8:
            text = src + "# " + "x" * ((1 << 20) + 10) + "\n"
            whats.append("over 1 MiB")
        elif kind == 9:
            text = src + "description: \"" + "\\x1b[31m" * 200 + "\\u0000\\u202e\"\n"
            whats.append("escaped control characters in a string")
        else:
            text = "kind: job\n" + "job:\n  notes:\n" + "".join(f"    - &n{i} n{i}\n" for i in range(250))
            whats.append("250 anchors (aliases unused)")
    if text is None:
        text = to_yaml(doc)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    if op in (7, 8, 9, 10, 13, 14) and not d.chance(4):
        command = "check"                          # where checks, storage, DeepSpeed and GPU keys are judged
    elif op == 11:
        command = d.pick(["check", "estimate", "estimate"])
    else:
        command = d.pick(["check", "check", "check", "estimate", "estimate", "profiles", "clean-cache"])
    refs = [str(path)]
    if command == "check":
        facts_file = str(facts[d.pick(sorted(facts))])
        if d.chance(3):
            refs = [d.pick(["a800-80g", "base", "cpu-ci", "h100-80g"]), str(path)]
        argv = ["check", "--facts", facts_file, *sum((["-p", r] for r in refs), [])]
        argv += d.pick([[], ["--format", "json"], ["--format", "junit"], ["-v"], ["--strict"]])
        return Case(argv, files, "; ".join(whats), "check", facts=facts_file, refs=refs)
    if command == "estimate":
        argv = ["estimate", "--offline", "-p", str(path)]
        argv += d.pick([[], ["--model", "opt-125m"], ["--gpu-memory", "80GB"], ["--format", "json"]])
        return Case(argv, files, "; ".join(whats), "estimate")
    if command == "profiles":
        return Case(["profiles", "show", str(path)], files, "; ".join(whats), "profiles")
    hub = FUZZ_DIR / "work" / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    argv = ["clean-cache", "--dry-run", "--cache-dir", str(hub), "-p", str(path)]
    return Case(argv, files, "; ".join(whats), "clean-cache")


# ---------------------------------------------------------------------------------------------------------------
# (2) facts


FACTS_SECTIONS = ("gpu", "torch", "python", "resources", "disk", "hf", "network", "kernel", "env", "toolchain",
                  "probes", "host", "provenance")


def facts_case(d: Draw, scratch: Scratch, seeds: dict[str, dict[str, Any]]) -> Case:
    folder = scratch.case_dir()
    name = d.pick(sorted(seeds))
    doc = copy.deepcopy(seeds[name])
    whats = [f"from {name}"]
    path = folder / "facts.json"
    text: str | bytes | None = None
    op = d.int(0, 11)
    if op <= 7:
        for _ in range(d.int(1, 4)):
            whats.append(mutate(d, doc, False, prefer=FACTS_SECTIONS))
    elif op == 8:                       # many rows where the judges loop
        target = d.pick(["gpu.devices", "kernel.xid_events", "disk.mounts", "hf.hub.repos", "torch.runtime.devices"])
        node: Any = doc
        for part in target.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        row = (node or [{}])[0] if isinstance(node, list) else {}
        rows = [copy.deepcopy(row) for _ in range(d.pick([64, 1000, 2500]))]
        parent: Any = doc
        parts = target.split(".")
        for part in parts[:-1]:
            parent = parent.setdefault(part, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent[parts[-1]] = rows
        whats.append(f"{target} x{len(rows)}")
    elif op == 9:                       # probe records: failed, timed out, hostile
        probes = doc.setdefault("probes", {})
        probe = d.pick(sorted(probes) or ["gpu"])
        probes[probe] = d.pick([{"status": "error", "message": ANSI, "duration_s": 1.0},
                                {"status": "timeout", "message": "", "duration_s": 1e308},
                                {"status": "ok"}, {}, None, "ok", {"status": None, "message": None, "duration_s": None}])
        if d.chance(2):
            doc.pop(probe, None)
        whats.append(f"probes.{probe} = {_short(probes[probe])}")
    elif op == 10:                      # the envelope
        kind = d.int(0, 5)
        if kind == 0:
            doc = {"facts": doc, "results": d.pick([[], None, "x", [{}]])}
            whats.append("wrapped as a JSON report")
        elif kind == 1:
            doc["schema_version"] = d.pick(["2.0", "1", "", 1, None, "1.99999", ".", ANSI])
            whats.append(f"schema_version = {doc['schema_version']!r}")
        elif kind == 2:
            doc = d.pick([[], "x", 1, None, [doc]])
            whats.append(f"top level {type(doc).__name__}")
        elif kind == 3:
            for section_name in d.pick([("gpu",), ("torch",), ("gpu", "torch"), FACTS_SECTIONS]):
                doc.pop(section_name, None)
            whats.append("sections removed")
        else:
            sec = d.pick(FACTS_SECTIONS)
            doc[sec] = hostile(d, False)
            whats.append(f"{sec} = {_short(doc[sec])}")
    else:                               # text level
        src = to_json(doc)
        kind = d.int(0, 6)
        if kind == 0:
            text = src.replace('"total_mib": 81920', '"total_mib": NaN', 1).replace('"logical": ', '"logical": Infinity, "x": ', 1)
            whats.append("NaN/Infinity tokens")
        elif kind == 1:
            text = src[: d.int(0, len(src) - 1)]
            whats.append("truncated")
        elif kind == 2:
            text = src.encode() + b"\xff"
            whats.append("non-UTF-8")
        elif kind == 3:
            text = "[" * d.pick([65, 1000, 100000]) + "]" * 3
            whats.append("deep nesting")
        elif kind == 4:
            text = src[:-1] + ', "pad": "' + "p" * (1_900_000 - len(src)) + '"}'
            whats.append("1.9 MB")
        elif kind == 5:
            text = src.replace('"', "'", 3)
            whats.append("quotes")
        else:
            text = d.pick(["", " ", "null", "{}", '{"schema_version": "1.3"}', '{"schema_version": "1.3", "gpu": []}',
                           '{"schema_version": "1.3", "gpu": {"devices": [1, "x", null]}}',
                           '{"schema_version": "1.3", "gpu": {"devices": [{"memory": []}]}}'])
            whats.append(f"document {text!r}")
    if text is None:
        text = to_json(doc)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    if d.chance(6):
        argv = ["estimate", "--offline", "--facts", str(path), "--model", d.pick(["opt-125m", "llama-2-7b"])]
        return Case(argv, [path], "; ".join(whats), "estimate")
    refs = d.pick(CHECK_PROFILES)
    argv = ["check", "--facts", str(path), *sum((["-p", r] for r in refs), [])]
    argv += d.pick([[], [], ["--format", "json"], ["--format", "junit"], ["-v"], ["--strict", "--no-bench"]])
    return Case(argv, [path], "; ".join(whats), "check", facts=str(path), refs=refs)


# ---------------------------------------------------------------------------------------------------------------
# (3) model configs


MODEL_KEYS = ["hidden_size", "intermediate_size", "ffn_dim", "num_attention_heads", "num_key_value_heads",
              "num_hidden_layers", "vocab_size", "head_dim", "max_position_embeddings", "word_embed_proj_dim",
              "type_vocab_size", "num_labels", "n_layer", "n_embd", "n_head", "n_kv_head", "dropout",
              "attention_dropout", "hidden_dropout_prob", "tie_word_embeddings", "enable_bias", "attention_bias",
              "mlp_bias", "do_layer_norm_before", "layer_norm_elementwise_affine", "_remove_final_layer_norm",
              "sequence_len"]
VISION_KEYS = ["hidden_size", "intermediate_size", "num_heads", "depth", "patch_size", "temporal_patch_size",
               "spatial_merge_size", "out_hidden_size", "in_channels", "num_position_embeddings",
               "deepstack_visual_indexes"]


def model_case(d: Draw, scratch: Scratch, seeds: dict[str, dict[str, Any]]) -> Case:
    folder = scratch.case_dir()
    name = d.pick(sorted(seeds) + ["nanochat"])
    doc = copy.deepcopy(seeds.get(name) or {"model_type": "nanochat", "n_layer": 12})
    whats = [f"from {name}"]
    path = folder / "config.json"
    for _ in range(d.int(1, 3)):
        op = d.int(0, 9)
        sub = doc.get("text_config") if isinstance(doc.get("text_config"), dict) and d.chance(2) else doc
        if op <= 3:
            key = d.pick(MODEL_KEYS)
            value = d.pick([0, -1, 1, 3, "32", 32.0, 1.5, 10**10, 10**10 + 1, 2**62, Raw("1" * 400),
                            Raw("1e400"), Raw("NaN"), True, None, [], {}, "x", -0.5, 2.0])
            sub[key] = value
            whats.append(f"{key} = {_short(value)}")
        elif op == 4:
            keys = [k for k in sub if k in MODEL_KEYS or k == "model_type"]
            if keys:
                key = d.pick(keys)
                del sub[key]
                whats.append(f"drop {key}")
        elif op == 5:
            doc["model_type"] = d.pick(["gpt2", "", None, 1, ["opt"], {"a": 1}, "OPT", "llama ", "qwen3_vl", "bert",
                                        "nanochat", "mistral", "qwen2", ANSI])
            whats.append(f"model_type = {doc['model_type']!r}")
        elif op == 6:
            key = d.pick(["text_config", "vision_config"])
            vis = doc.get("vision_config")
            if key == "vision_config" and isinstance(vis, dict) and d.chance(2):
                vkey = d.pick(VISION_KEYS)
                vis[vkey] = d.pick([0, -1, 1, 10**10, "16", [], {}, None, 1.5, Raw("1" * 400), 5, [1] * 1000])
                whats.append(f"vision_config.{vkey} = {_short(vis[vkey])}")
            else:
                doc[key] = d.pick([[], [1, 2], "ab", 1, None, {}, [["a", 1]], True])
                whats.append(f"{key} = {doc[key]!r}")
        else:
            whats.append(mutate(d, doc, False))
    path.write_text(to_json(doc), encoding="utf-8")
    argv = ["estimate", "--offline", "--model", str(d.pick([path, path, folder]))]
    argv += d.pick([[], ["--method", "qlora"], ["--method", "lora", "--lora-targets", "all-linear"],
                    ["--method", "inference", "--context", "4096"], ["--method", "hessian"],
                    ["--gpu-memory", "80GB"], ["--format", "json"], ["--images", "2", "--method", "qlora"],
                    ["--optimizer", "adafactor"], ["--optimizer", "muon", "--grad-checkpointing"],
                    ["--quant", "int8", "--method", "inference"], ["--quant", "gptq", "--method", "inference"],
                    ["--gpu", "A800 80GB", "--batch", "4"], ["--attention", "eager", "--seq", "4096"]])
    return Case(argv, [path], "; ".join(whats), "estimate")


# ---------------------------------------------------------------------------------------------------------------
# (4) flags, drawn from the argparse definitions


def subparser(name: str) -> Any:
    import argparse

    from doctor.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def flag_specs(name: str) -> list[dict[str, Any]]:
    """The optional flags of a subcommand: name, kind (switch / choice / int / float / text), choices, dest."""
    import argparse

    specs = []
    for action in subparser(name)._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:
            kind = "switch"
        elif action.choices:
            kind = "choice"
        else:
            kind = _kind_of(action.type)
        valid = [v for v in (VALID_INTS if kind == "int" else VALID_FLOATS) if _accepts(action.type, v)]
        specs.append({"flag": flag, "kind": kind, "choices": list(action.choices or []), "dest": action.dest,
                      "valid": valid or ["1"]})
    return specs


def _kind_of(tp: Any) -> str:
    """int / float / text for an argparse type (int, float, or doctor's own parsers such as args.whole)."""
    if tp is None or tp is str:
        return "text"
    for probe in ("1", "1.5"):
        try:
            value = tp(probe)
        except Exception:  # noqa: BLE001
            continue
        return "int" if isinstance(value, int) and probe == "1" and not _accepts(tp, "1.5") else \
            "float" if isinstance(value, (int, float)) else "text"
    return "text"


def _accepts(tp: Any, text: str) -> bool:
    try:
        (tp or str)(text)
        return True
    except Exception:  # noqa: BLE001
        return False


VALID_INTS = ["1", "2", "4", "8", "64", "512", "2048", "8192"]
VALID_FLOATS = ["0.5", "5", "60", "600"]


INTS = ["0", "-1", "1", "2", "3", "8", "512", "4096", "100000", str(2**31), str(2**63), "1" * 30, "1" * 400]
FLOATS = ["0", "-1", "0.001", "1", "60", "nan", "inf", "-inf", "1e309", "1e-320", "1" * 400]
GPU_NAMES = ["A800 80GB", "NVIDIA H100 80GB HBM3", "H100", "NVIDIA A800-SXM4-80GB", "rtx 4090", "A100", "",
             "no such gpu", ANSI, "x" * 3000, "80GB", "V100", "NVIDIA", "a"]
SIZES = ["80GB", "24GiB", "0GB", "0.0001KB", "1", "GB", "-1GB", "1e3GB", "9" * 400 + "GB", "1" * 30 + "TiB",
         "80 gib", " 80GB ", "80GB\n", "nan GB", "0.5MiB", "." + "0" * 400 + "1GB", "99999999999999999999TB"]
VERSIONS = ["", "1.2.3.4.5rc", "../../x", "9" * 40, "9" * 5000, "4.57.1", "0.17.1", "0.45.0", "0.16.4", "v4.0",
            "1!2.0", "4.0.dev0+local", "nul\x00", "💥", "-1", "0", "1e5", "4.57.1\n", " 4.57.1 ", ANSI]
LORA_TARGETS = ["default", "all-linear", "nomatch", ",", ",,,", "q_proj,,", "", " ", "q_proj", "c_q,c_v",
                "qkv", "linear_fc1", ANSI, "x" * 5000, "q_proj," * 500]


def _text_value(d: Draw, dest: str, ctx: dict[str, Any]) -> str:
    if dest == "model":
        return str(d.pick(["opt-125m", "opt-1.3b", "llama-2-7b", "llama-3-8b", "bert-large-uncased",
                           "qwen3-vl-32b-instruct", "Qwen/Qwen3-VL-32B-Instruct", "nanochat-d20", "nanochat-d0",
                           "nanochat-d1", "nanochat-d99999999999", "nanochat-d" + "9" * 400, "no-such-model",
                           ctx["config"], ctx["config"].parent, ctx["missing"], "/dev/null", ctx["empty_dir"],
                           "org/missing-model", "", ANSI, "x" * 2000, "/dev/zero"]))
    if dest == "profile":
        return str(d.pick(["qwen3-vl-32b-qlora", "nanochat-d20-32g", "opt-hessian", "mamba-7b-zero2", "a800-80g",
                           "base", "cpu-ci", "no-such", ctx["missing"], "/dev/null", ""]))
    if dest == "gpu":
        return d.pick(GPU_NAMES)
    if dest in ("gpu_memory", "free_target"):
        return d.pick(SIZES)
    if dest == "facts":
        return str(d.pick([ctx["facts"]["autodl-a800"], ctx["facts"]["cpu-container"], ctx["missing"], "/dev/null",
                           ctx["empty_dir"], ctx["config"]]))
    if dest == "lora_targets":
        return d.pick(LORA_TARGETS)
    if dest.endswith("_version"):
        return d.pick(VERSIONS)
    if dest == "older_than":
        return d.pick(["30d", "12h", "0s", "-1d", "1", "d", "9" * 400 + "d", "1e5d", "99999999999w", "0.5min",
                       "nan d", "", ANSI])
    if dest in ("keep", "best"):
        return d.pick(["*", "Qwen/*", "[", "**/**", "", ANSI, "x" * 3000, "checkpoint-1", "../.."])
    if dest == "include":
        return d.pick(["pip", "all", "datasets,xet", "torch-hub", "nope", ",", "", "pip,nope"])
    if dest == "checkpoints":
        return str(d.pick([ctx["empty_dir"], ctx["missing"], ctx["config"], "/dev/null"]))
    if dest == "output":
        return str(d.pick([ctx["out_file"], ctx["empty_dir"], ctx["missing"] + "/x/y.json", "/dev/full",
                           "/dev/null", "", ctx["config"].parent / "r.xml"]))
    if dest == "python":
        return str(d.pick([sys.executable, "/nonexistent/python", "", "/dev/null", ctx["empty_dir"]]))
    return d.pick(STRINGS)


def flag_value(d: Draw, spec: dict[str, Any], ctx: dict[str, Any]) -> list[str]:
    kind = spec["kind"]
    if kind == "switch":
        return [spec["flag"]]
    hostile_value = d.chance(4)     # mostly values a user might type, so the run reaches past the flag checks
    if kind == "choice":
        value = str(d.pick(spec["choices"]))
    elif kind == "int":
        value = d.pick(INTS if hostile_value else spec["valid"])
    elif kind == "float":
        value = d.pick(FLOATS if hostile_value else spec["valid"])
    elif not hostile_value and spec["dest"] in ("gpu_memory", "free_target"):
        value = d.pick(["80GB", "24GiB", "40GB", "1TB", "100MB"])
    elif not hostile_value and spec["dest"] == "lora_targets":
        value = d.pick(["default", "all-linear", "q_proj,v_proj", "c_q,c_v", "query,value"])
    elif not hostile_value and spec["dest"].endswith("_version"):
        value = d.pick(["4.57.1", "4.40.0", "5.0.0", "0.17.1", "0.10.0", "0.45.0", "0.42.0", "0.16.4", "0.14.0"])
    elif not hostile_value and spec["dest"] == "older_than":
        value = d.pick(["30d", "12h", "90min", "2w"])
    else:
        value = _text_value(d, spec["dest"], ctx)
    return [f"{spec['flag']}={value}"]   # '=' keeps '-1' and '--help' values as values


CONTRADICTIONS = [
    ["--method=lora", "--lora-targets=nomatch"], ["--method=qlora", "--lora-targets=lm_head_only"],
    ["--gpu-memory=0GB"], ["--context=16", "--seq=4096", "--method=inference"], ["--context=4096", "--method=full"],
    ["--attention=flash", "--dtype=fp32", "--no-amp"], ["--attention=flash_attention_2", "--dtype=fp32"],
    ["--double-quant", "--quant=awq"], ["--double-quant", "--quant=none", "--method=full"],
    ["--quant=awq", "--method=full"], ["--method=qlora", "--quant=int8"], ["--images=4", "--model=opt-125m"],
    ["--images=4", "--model=qwen3-vl-32b-instruct", "--image-size=1"],
    ["--images=100000", "--image-size=100000", "--model=qwen3-vl-32b-instruct"],
    ["--gpu=A800 80GB", "--gpu-memory=24GB"], ["--amp", "--no-amp"], ["--method=inference", "--optimizer=muon"],
    ["--batch=" + "9" * 400, "--seq=" + "9" * 400], ["--method=hessian", "--grad-checkpointing"],
    ["--lora-rank=100000000", "--method=lora"], ["--adapter-dtype=fp16", "--method=full"],
]


def flags_context(folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "model" / "config.json"
    config.parent.mkdir(exist_ok=True)
    config.write_text((MODELS_DIR / "opt-125m.json").read_text())
    empty = folder / "empty"
    empty.mkdir(exist_ok=True)
    out_file = folder / "out.txt"
    out_file.write_text("an existing file\n")
    hub = folder / "hub"
    hub.mkdir(exist_ok=True)
    return {"config": config, "missing": str(folder / "missing.json"), "empty_dir": empty, "out_file": out_file,
            "facts": write_facts_seeds(folder / "facts"), "hub": hub}


def estimate_flags_case(d: Draw, ctx: dict[str, Any]) -> Case:
    specs = flag_specs("estimate")
    argv = ["estimate", "--offline"]
    for spec in specs:
        if spec["dest"] not in ("offline", "simulate", "simulate_timeout") and d.chance(6):   # --simulate: a
            argv += flag_value(d, spec, ctx)                       # torch child, seconds a draw (simulate_case)
    if d.chance(2):
        argv += d.pick(CONTRADICTIONS)
    if not any(a.startswith(("--model", "--profile")) for a in argv) and not d.chance(10):
        argv.append("--model=" + d.pick(["opt-125m", "llama-2-7b", "qwen3-vl-32b-instruct", "nanochat-d12"]))
    return Case(argv, [], "flags", "estimate")


NEW_ESTIMATE_FLAGS = ("hessian", "probes", "calibration_samples", "transformers_version", "peft_version",
                      "bitsandbytes_version", "deepspeed_version", "chunked_ce")


def new_estimate_flags_case(d: Draw, ctx: dict[str, Any]) -> Case:
    """The second-order, library-version and chunked-CE flags alone, on a workload that otherwise runs (so most
    draws reach a verdict, which the all-flags draw above rarely does)."""
    specs = [s for s in flag_specs("estimate") if s["dest"] in NEW_ESTIMATE_FLAGS]
    model = d.pick(["opt-125m", "llama-2-7b", "qwen3-vl-32b-instruct", "nanochat-d12", "opt-6.7b"])
    argv = ["estimate", "--offline", f"--model={model}"]
    method = d.pick([["--method=hessian"], [], ["--method=qlora"], ["--method=lora"], ["--method=inference"],
                     ["--zero=2", "--world-size=2", "--offload-optimizer=cpu"], ["--method=hessian", "--dtype=fp16"]])
    argv += method
    second_order = ("hessian", "probes", "calibration_samples")
    for spec in specs:   # mostly the flags that apply to the method drawn (d.chance(8): any)
        applies = (spec["dest"] in second_order) == ("--method=hessian" in method) and not (
            spec["dest"] == "chunked_ce" and ("--method=hessian" in method or "--method=inference" in method))
        if (applies and not d.chance(3)) or d.chance(8):
            argv += flag_value(d, spec, ctx)
    if d.chance(4):
        argv += d.pick([["--format=json"], ["--gpu=A800 80GB"], ["--seq=2048"], ["--batch=" + "9" * 30]])
    return Case(argv, [], "new flags", "estimate", names=["--"])


def other_flags_case(d: Draw, ctx: dict[str, Any]) -> Case:
    """check (always on a snapshot), clean-cache (always --dry-run on a scratch cache), explain, profiles show."""
    command = d.pick(["check", "check", "check", "clean-cache", "clean-cache", "explain", "profiles"])
    if command == "explain":
        return Case(["explain", d.pick(["gpu.model", "gpu.modle", "", ANSI, "x" * 3000, "vram.budget", "..", "-"])],
                    [], "explain", "explain")
    if command == "profiles":
        return Case(["profiles", "show", d.pick(["base", "nope", "", ANSI, str(ctx["missing"]), "/dev/null",
                                                 "qwen3-vl-32b-qlora", "x" * 300 + ".yaml"])], [], "profiles",
                    "profiles")
    argv = [command]
    for spec in flag_specs(command):
        if spec["dest"] in ("facts", "dry_run", "cache_dir", "yes", "force_cache_dir"):
            continue
        if command == "check" and spec["dest"] == "python" and not d.chance(8):
            continue
        if d.chance(3):
            argv += flag_value(d, spec, ctx)
    if command == "check":
        argv += [f"--facts={d.pick([ctx['facts']['autodl-a800'], ctx['facts']['cpu-container'], ctx['facts']['qwen-env']])}"]
        if not any(a.startswith("--profile") for a in argv) and d.chance(2):
            argv += [f"--profile={p}" for p in d.pick(CHECK_PROFILES)]
    else:
        argv += ["--dry-run", f"--cache-dir={ctx['hub']}"]
    return Case(argv, [], "flags", command)


def validate_flags_case(d: Draw, ctx: dict[str, Any]) -> Case:
    """Always one value validate must refuse before it starts (it would otherwise run GPU phases for minutes)."""
    bad = d.pick([["--budget=0"], ["--budget=-1"], ["--budget=nan"], ["--budget=-inf"], ["--runs=0"], ["--runs=51"],
                  ["--runs=-3"], ["--runs=" + "1" * 400], [f"--output={ctx['out_file']}"]])
    argv = ["validate", *bad]
    for spec in flag_specs("validate"):
        if spec["dest"] in ("budget", "runs", "output"):
            continue
        if d.chance(3):
            argv += flag_value(d, spec, ctx)
    return Case(argv, [], "flags", "validate", isolated=True)


# ---------------------------------------------------------------------------------------------------------------
# the corpus: minimal hostile inputs the fuzzer found (each once a contract violation), replayed on every run


def _facts_with(edit: Callable[[dict[str, Any]], None], seed: str = "autodl-a800") -> str:
    facts = facts_seeds()[seed]
    edit(facts)
    return to_json(facts)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(facts: dict[str, Any]) -> None:
        node: Any = facts
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return apply


def corpus() -> dict[str, tuple[dict[str, str | bytes], list[str]]]:
    """name -> ({file name: content}, argv with {dir} for the folder the files are written to)."""
    ds_profile = "kind: job\nextends: [base]\njob:\n  deepspeed:\n    config: ds.json\n"
    big = "1" * 400
    cases: dict[str, tuple[dict[str, str | bytes], list[str]]] = {
        "profile: dict-typed check param (disk.space params.storage)": (
            {"p.yaml": "kind: job\nchecks:\n  - id: disk.space\n    params: {storage: {}}\n"},
            ["check", "--facts", "{dir}/facts.json", "-p", "{dir}/p.yaml"]),
        "profile: 400-digit number (machine.ram_gib)": (
            {"p.yaml": f"kind: machine\nmachine:\n  ram_gib: {big}\n"},
            ["check", "--facts", "{dir}/facts.json", "-p", "{dir}/p.yaml"]),
        "profile: 5000-digit int": (
            {"p.yaml": "kind: machine\nmachine:\n  ram_gib: " + "1" * 5000 + "\n"},
            ["check", "--facts", "{dir}/facts.json", "-p", "{dir}/p.yaml"]),
        "profile: 400-digit job.workload.images_per_sample (estimate)": (
            {"p.yaml": f"kind: job\njob:\n  workload:\n    model: qwen3-vl-32b-instruct\n    images_per_sample: {big}\n"},
            ["estimate", "--offline", "-p", "{dir}/p.yaml"]),
        "deepspeed: micro batch 0": (
            {"p.yaml": ds_profile, "ds.json": '{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 0}'},
            ["check", "--facts", "{dir}/facts.json", "-p", "{dir}/p.yaml"]),
        "deepspeed: micro batch 0 with grad accum": (
            {"p.yaml": ds_profile, "ds.json": '{"train_batch_size": 1, "train_micro_batch_size_per_gpu": 0, '
                                              '"gradient_accumulation_steps": 8}'},
            ["check", "--facts", "{dir}/facts.json", "-p", "{dir}/p.yaml"]),
        "deepspeed: zero_optimization is a list": (
            {"p.yaml": ds_profile, "ds.json": '{"zero_optimization": [{}]}'},
            ["check", "--facts", "{dir}/facts.json", "-p", "{dir}/p.yaml"]),
        "facts: resources is empty": (
            {"f.json": _facts_with(_set("resources", {}), "cpu-container")},
            ["check", "--facts", "{dir}/f.json", "-p", "base"]),
        "facts: resources.shm is a string": (
            {"f.json": _facts_with(_set("resources.shm", "x"))},
            ["check", "--facts", "{dir}/f.json", "-p", "base"]),
        "facts: resources.ulimits is a list": (
            {"f.json": _facts_with(_set("resources.ulimits", [[1048576, 1048576], [None, None]]))},
            ["check", "--facts", "{dir}/f.json", "-p", "base"]),
        "facts: a hub repo without repo_id": (
            {"f.json": _facts_with(_set("hf.hub.repos", [{}]))},
            ["check", "--facts", "{dir}/f.json", "-p", "a800-80g", "-p", "qwen3-vl-32b-qlora"]),
        "facts: network.index is a string": (
            {"f.json": _facts_with(_set("network.index", "inf"))},
            ["check", "--facts", "{dir}/f.json", "-p", "a800-80g", "-p", "qwen3-vl-32b-qlora"]),
        "facts: probe record without status (-v)": (
            {"f.json": _facts_with(_set("probes.torch", {}))},
            ["check", "--facts", "{dir}/f.json", "-p", "base", "-v"]),
        "facts: xid event without code": (
            {"f.json": _facts_with(_set("kernel.xid_events", [{}]))},
            ["check", "--facts", "{dir}/f.json", "-p", "cpu-ci"]),
        "facts: python.deepspeed_ops is true": (
            {"f.json": _facts_with(_set("python.deepspeed_ops", True))},
            ["check", "--facts", "{dir}/f.json", "-p", "base"]),
        "facts: disk.paths is a string": (
            {"f.json": _facts_with(_set("disk.paths", "x"))},
            ["check", "--facts", "{dir}/f.json", "-p", "a800-80g", "-p", "mamba-7b-zero2"]),
        "facts: a mount point is a list": (
            {"f.json": _facts_with(_set("disk.mounts.1.mountpoint", [None]))},
            ["check", "--facts", "{dir}/f.json", "-p", "rtx4090-24g", "-p", "nanochat-d12-32g"]),
        "facts: ulimits.memlock_bytes holds a string": (
            {"f.json": _facts_with(_set("resources.ulimits.memlock_bytes", ["A800", None]))},
            ["check", "--facts", "{dir}/f.json", "-p", "base"]),
        "facts: 400-digit host_total_bytes": (
            {"f.json": _facts_with(_set("resources.memory.host_total_bytes", Raw(big)))},
            ["check", "--facts", "{dir}/f.json", "-p", "base"]),
        "facts: resources.cpu is an int": (
            {"f.json": _facts_with(_set("resources.cpu", -1))},
            ["check", "--facts", "{dir}/f.json", "-p", "cpu-ci"]),
        "facts: resources.cpu is empty": (
            {"f.json": _facts_with(_set("resources.cpu", {}))},
            ["check", "--facts", "{dir}/f.json", "-p", "base"]),
        "facts: probe record without duration_s (-v)": (
            {"f.json": _facts_with(_set("probes.gpu", {"status": "ok"}))},
            ["check", "--facts", "{dir}/f.json", "-p", "base", "-v"]),
        "facts: 400-digit probe duration_s (-v)": (
            {"f.json": _facts_with(_set("probes.hf.duration_s", Raw(big)))},
            ["check", "--facts", "{dir}/f.json", "-p", "base", "-v"]),
        "model config: qwen3-vl text_config is an int": (
            {"config.json": to_json(dict(model_seeds()["qwen3-vl-32b-instruct"], text_config=1))},
            ["estimate", "--offline", "--model", "{dir}/config.json"]),
        "flag: --gpu-memory with 400 digits": (
            {}, ["estimate", "--offline", "--model", "opt-125m", "--gpu-memory", "9" * 400 + "GB"]),
        "flag: clean-cache --free-target with 400 digits": (
            {}, ["clean-cache", "--dry-run", "--cache-dir", "{dir}/hub", "--free-target", "9" * 400 + "GB"]),
        "flag: --model with a 3000-character name": (
            {}, ["estimate", "--offline", "--model", "x" * 3000]),
        "flag: profiles show a 300-character .yaml name": (
            {}, ["profiles", "show", "x" * 300 + ".yaml"]),
        "flag: check -p with a 300-character .yaml name": (
            {}, ["check", "--facts", "{dir}/facts.json", "-p", "x" * 300 + ".yaml"]),
    }
    return cases


def write_corpus_case(name: str, folder: Path) -> list[str]:
    files, argv = corpus()[name]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "facts.json").write_text(json.dumps(facts_seeds()["autodl-a800"]))
    (folder / "hub").mkdir()
    for fname, content in files.items():
        if isinstance(content, bytes):
            (folder / fname).write_bytes(content)
        else:
            (folder / fname).write_text(content)
    return [a.replace("{dir}", str(folder)) for a in argv]


# ---------------------------------------------------------------------------------------------------------------
# (5) the newer surfaces: hybrid Mamba configs, `doctor baseline capture --from-report`, `doctor check --health`,
# and the --simulate parent with a stand-in child


HYBRID_SEEDS = {   # tests/test_vram_hybrid.py TINY: small configs transformers builds
    "bamba": {"model_type": "bamba", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 5,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "attn_layer_indices": [1, 3],
              "mamba_n_heads": 8, "mamba_d_state": 16, "mamba_n_groups": 2, "mamba_chunk_size": 16},
    "nemotron_h": {"model_type": "nemotron_h", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100, "hybrid_override_pattern": "M-M*-M",
                   "mamba_num_heads": 8, "mamba_head_dim": 16, "ssm_state_size": 16, "n_groups": 2, "chunk_size": 16},
    "granitemoehybrid": {"model_type": "granitemoehybrid", "hidden_size": 64, "shared_intermediate_size": 96,
                         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
                         "num_local_experts": 0, "layer_types": ["mamba", "attention", "mamba", "attention"],
                         "mamba_n_heads": 8, "mamba_d_state": 16, "mamba_n_groups": 2, "mamba_chunk_size": 16},
}
HYBRID_LISTS = [[], [0], [-1], [-(2**63)], [2**63], [10**30], [1, 1, 1], list(range(-5, 50)), ["1"], [True], [1.5],
                [None], [[1]], "1,3", 3, None, {"1": 1}, ["mamba"], ["attention"] * 3, ["mlp"], ["moe"], ["M"],
                ["linear_attention", "full_attention"], ["mamba", 1], ["mamba"] * 20000, [ANSI], [""]]
HYBRID_PATTERNS = ["", "M", "*", "-", "E", "M?*", "m", "M" * 20000, "*" * 20000, "M\x00*", "M\u202e*", "💥", " M", "M-",
                   "M*" * 3000, ANSI, 5, None, ["M"], {"M": 1}]
HYBRID_INTS = [0, -1, 1, 2, 3, 10**9, 10**10, 10**10 + 1, 2**63, Raw("1" * 400), "4", 4.0, True, None, [4]]
HYBRID_INT_KEYS = ["num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                   "mamba_n_heads", "mamba_num_heads", "mamba_d_head", "mamba_head_dim", "mamba_expand",
                   "mamba_n_groups", "n_groups", "mamba_d_state", "ssm_state_size", "mamba_d_conv", "conv_kernel",
                   "intermediate_size", "shared_intermediate_size", "num_local_experts", "num_nextn_predict_layers",
                   "vocab_size"]


def hybrid_case(d: Draw, scratch: Scratch) -> Case:
    """A hybrid attention + Mamba-2 config with hostile layer lists, patterns and sizes."""
    folder = scratch.case_dir()
    family = d.pick(sorted(HYBRID_SEEDS))
    doc = copy.deepcopy(HYBRID_SEEDS[family])
    whats = [f"from {family}"]
    for _ in range(d.int(1, 3)):
        op = d.int(0, 5)
        if op <= 1:
            key = d.pick(["attn_layer_indices", "layers_block_type", "layer_types"])
            doc[key] = d.pick(HYBRID_LISTS)
        elif op == 2:
            key = "hybrid_override_pattern"
            doc[key] = d.pick(HYBRID_PATTERNS)
        elif op <= 4:
            key = d.pick(HYBRID_INT_KEYS)
            doc[key] = d.pick(HYBRID_INTS)
        else:
            key = d.pick(["mamba_d_head", "tie_word_embeddings", "attention_dropout", "mlp_bias", "use_bias",
                          "mamba_conv_bias", "model_type"])
            doc[key] = d.pick(["auto", "x", True, 1.5, -0.1, None, Raw("NaN"), "jamba", "zamba2", "falcon_h1", ""])
        whats.append(f"{key} = {_short(doc[key])}")
    path = folder / "config.json"
    path.write_text(to_json(doc), encoding="utf-8")
    argv = ["estimate", "--offline", "--model", str(path)]
    argv += d.pick([[], ["--method", "inference", "--context", "32768"], ["--method", "lora"], ["--method", "qlora"],
                    ["--format", "json"], ["--grad-checkpointing", "--batch", "4"], ["--method", "hessian"],
                    ["--method", "hessian", "--hessian", d.pick(["hvp", "hutchinson", "gptq", "full"])],
                    ["--zero", "3", "--world-size", "8"], ["--transformers-version", d.pick(["4.40.0", "5.0.0"])]])
    return Case(argv, [path], "; ".join(whats), "estimate", names=[str(path), "--"])


def baseline_report(folder: Path) -> Path:
    """A real `doctor check --format json` report of an 8x A800 node with a literal bench section (the seed)."""
    from benchfacts import device
    from factsbuilder import QWEN_QLORA_ENV, autodl_box

    folder.mkdir(parents=True, exist_ok=True)
    name = "NVIDIA A800-SXM4-80GB"
    facts = autodl_box(dict(QWEN_QLORA_ENV), hf_home="/root/autodl-tmp/huggingface", count=8)
    facts["provenance"]["hostname"] = "gpu01"
    facts["bench"] = {"status": "ok", "device_type": "cuda", "timeout_s": 180.0, "duration_s": 30.0,
                      "devices": [device(i, name, fp16=280.0 + i, bf16=282.0, gbps=1800.0 + i) for i in range(8)]}
    src, out = folder / "gpu01.facts.json", folder / "gpu01.json"
    src.write_text(json.dumps(facts))
    o = run_inprocess(["check", "--facts", str(src), "-p", "base", "--format", "json", "--output", str(out)])
    assert o.rc == 0 and out.is_file(), o.err
    return out


TOLERANCES = ["10%", "0", "0%", "99.999%", " 5 % ", "-5%", "200%", "100%", "nan", "inf", "1e309", "1e2", "", "%",
              "10%%", "0x10", "1" * 400, "10 percent", ANSI, "５%"]
REPORT_KEYS = ["facts", "facts.gpu", "facts.bench", "facts.python", "facts.torch", "facts.gpu.devices",
               "facts.gpu.driver_version", "facts.bench.devices", "facts.python.distributions", "facts.python.version",
               "facts.torch.version", "verdict", "verdict.exit_code", "results", "schema_version", "facts.provenance",
               "facts.provenance.hostname", "profiles", "created", "doctor_version", "facts.bench.status"]


def _report_edit(d: Draw, doc: dict[str, Any]) -> str:
    """One targeted edit of a report: drop a section or set it to a hostile value of another type."""
    key = d.pick(REPORT_KEYS)
    node: Any = doc
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return "no-op"
    if d.chance(3):
        node.pop(parts[-1], None)
        return f"drop {key}"
    old = node.get(parts[-1])
    node[parts[-1]] = d.pick([None, 1, -1, "", "x", [], {}, [None], [1, "x"], {"": None}, Raw("1" * 400), ANSI,
                              "1" * 300_000, True, Raw("NaN"), [old] * 3 if old is not None else [{}],
                              "570.124.06", "4.57.1", "==1", "1.0", 0, 3, [{"name": ANSI, "status": "ok"}]])
    return f"set {key} = {_short(node[parts[-1]])}"


def baseline_case(d: Draw, scratch: Scratch, seed: Path) -> Case:
    """`doctor baseline capture --from-report` with a hostile report, output path, tolerance or name."""
    folder = scratch.case_dir()
    report = folder / "report.json"
    whats: list[str] = []
    kind = d.int(0, 9)
    doc = json.loads(seed.read_text())
    source: Path | str = report
    if kind <= 3:
        for _ in range(d.int(1, 3)):
            whats.append(_report_edit(d, doc))
        report.write_text(to_json(doc), encoding="utf-8")
    elif kind <= 5:
        for _ in range(d.int(1, 2)):
            whats.append(mutate(d, doc, False, prefer=("facts", "verdict", "results")))
        report.write_text(to_json(doc), encoding="utf-8")
    elif kind == 6:
        text = seed.read_text()
        variant = d.int(0, 5)
        if variant == 0:
            report.write_bytes(text.encode()[: d.int(0, 2000)] + b"\xff\xfe\x80")
            whats.append("non-UTF-8 bytes")
        elif variant == 1:
            report.write_text(text[: d.int(0, len(text) - 1)])
            whats.append("truncated")
        elif variant == 2:
            report.write_text(text + " " * ((32 << 20) + 10))
            whats.append("over the size limit")
        elif variant == 3:
            report.write_text(d.pick(["", "null", "[]", "1", '"x"', "{}", "[" * 100_000, '{"schema_version": "1.9"}',
                                      '{"schema_version": "2.0"}', "\ufeff{}", '{"a": NaN}']))
            whats.append(f"document {report.read_text()[:30]!r}")
        elif variant == 4:
            doc["facts"]["gpu"]["devices"] = doc["facts"]["gpu"]["devices"] * 500
            doc["facts"]["bench"]["devices"] = doc["facts"]["bench"]["devices"] * 500
            report.write_text(json.dumps(doc))
            whats.append("4000 GPUs")
        else:   # a facts snapshot where a report belongs
            report.write_text(seed.with_name("gpu01.facts.json").read_text())
            whats.append("a facts snapshot")
    elif kind == 7:
        fifo = folder / "fifo.json"
        os.mkfifo(fifo)
        source = d.pick([folder, "/dev/zero", "/dev/null", fifo, folder / "missing.json", "", "/proc/self/mem"])
        whats.append(f"--from-report {source}")
    else:
        report.write_text(seed.read_text())
    argv = ["baseline", "capture", "--from-report", str(source)]
    out = folder / "site.yaml"
    choice = d.int(0, 11)   # 0-4 and 10-11: a new file (hypothesis draws small numbers most often)
    if choice == 5:
        out = folder
    elif choice == 6:
        out = Path("/proc/doctor-fuzz.yaml")
    elif choice == 7:
        out = folder / "missing" / "site.yaml"
    elif choice == 3:
        out.write_text("kind: machine\n")
        if d.chance(2):
            argv.append("--force")
    elif choice == 8:
        out = folder / "out.fifo"
        os.mkfifo(out)
        argv.append("--force")
    elif choice == 9:
        out = folder / "a b'$(x)" / "site.yaml"
        out.parent.mkdir()
    argv += ["--output", str(out)]
    if d.chance(2):
        argv.append("--tolerance=" + d.pick(TOLERANCES))
    if d.chance(4):
        argv.append("--name=" + d.pick(STRINGS))
    if d.chance(4):
        argv.append("--versions=" + d.pick(["exact", "minimum", "none"]))
    if d.int(0, 11) == 11:
        argv += d.pick([["--profile", "base"], ["--python", sys.executable]])   # refused with --from-report
    whats.append(f"--output {out.name}")
    return Case(argv, [report] if report.is_file() else [], "; ".join(whats), "baseline",
                names=[str(source), str(out), "--"])


def health_profiles(folder: Path, seed_report: Path) -> list[list[str]]:
    """The profile combinations --health is fuzzed with, a captured site baseline among them."""
    site = folder / "site.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    o = run_inprocess(["baseline", "capture", "--from-report", str(seed_report), "-o", str(site), "--force"])
    assert o.rc == 0, o.err
    return [[], ["base"], ["a800-80g"], [str(site)], ["cpu-ci"], ["h100-80g", "opt-hessian"], [str(site), "base"]]


def health_case(d: Draw, scratch: Scratch, seeds: dict[str, dict[str, Any]], profiles: list[list[str]]) -> Case:
    """`doctor check --health --facts` with a mutated snapshot (the sections health reads most often)."""
    folder = scratch.case_dir()
    name = d.pick(sorted(seeds))
    doc = copy.deepcopy(seeds[name])
    whats = [f"from {name}"]
    for _ in range(d.int(1, 3)):
        slot = pick_slot(d, doc, ("gpu", "resources", "disk", "kernel", "host", "bench"))
        if slot is not None and not d.chance(3):   # mostly a value of the same type: past the schema, to the checks
            parent, key, where = slot
            parent[key] = same_type(d, parent[key], False)
            whats.append(f"set {where} = {_short(parent[key])} (same type)")
        else:
            whats.append(mutate(d, doc, False, prefer=("gpu", "resources", "disk", "kernel", "host", "bench")))
    path = folder / "facts.json"
    path.write_text(to_json(doc), encoding="utf-8")
    refs = d.pick(profiles)
    argv = ["check", "--health", "--facts", str(path), *[a for r in refs for a in ("-p", r)]]
    extra = d.int(0, 9)
    argv += [[], [], ["-v"], ["--strict"], ["--timeout", "0.001"], ["--timeout", "1e9"], ["--no-bench"], [],
             ["-v", "--strict"], ["--format", "json"] if d.chance(2) else ["--output", str(folder / "x")]][extra]
    return Case(argv, [path], "; ".join(whats), "check", facts=str(path), refs=refs,
                names=[str(path), "--"])


SIM_ANSWERS: list[Any] = [
    {"ok": True, "peak_bytes": 1000, "by_category": {"params": 600}, "peak_phase": "backward"},
    {"ok": True}, {"ok": True, "peak_bytes": "x"}, {"ok": True, "peak_bytes": None}, {"ok": True, "peak_bytes": -1},
    {"ok": True, "peak_bytes": 2**70}, {"ok": True, "peak_bytes": 1.5e308}, {"ok": True, "peak_bytes": 10,
                                                                            "by_category": "abc"},
    {"ok": True, "peak_bytes": 10, "by_category": [1, 2]}, {"ok": True, "peak_bytes": 10, "by_category": {"a": "x"}},
    {"ok": True, "peak_bytes": 10, "versions": "x", "notes": "n"}, {"ok": True, "peak_bytes": 10, "notes": [ANSI]},
    {"ok": True, "peak_bytes": 10, "peak_phase": {"a": 1}, "seconds": "x", "params": [1]},
    {"ok": False}, {"ok": False, "stage": None, "error": None}, {"ok": False, "stage": "import", "error": ANSI},
    {"ok": False, "stage": [1], "error": {"a": 1}, "refused": True}, {"ok": "yes", "peak_bytes": 5}, {"ok": 0},
]


def simulate_case(d: Draw, folder: Path) -> tuple[Case, str]:
    """`doctor estimate --simulate` with the child replaced by a stand-in printing a hostile answer (the text the
    stand-in prints is returned, for the caller to put where the stand-in reads it)."""
    kind = d.int(0, 5)
    if kind <= 3:
        answer = copy.deepcopy(d.pick(SIM_ANSWERS))
        text = to_json(answer).replace("\n", "")
        what = f"answer {text[:80]}"
    else:
        text = d.pick(["", "not json", "[1]", '{"ok"', "null", "1e999", '{"ok": true, "peak_bytes": NaN}',
                       "x" * 200_000, '{"ok": true, "peak_bytes": 1' + "0" * 5000 + "}"])
        what = f"raw stdout {text[:40]!r}"
    model = d.pick(["opt-125m", "llama-2-7b", str(folder / "hybrid.json"), str(folder / "unmodelled.json")])
    argv = ["estimate", "--offline", "--simulate", "--model", model]
    argv += d.pick([[], ["--format", "json"], ["--method", "inference"], ["--method", "lora"],
                    ["--transformers-version", "4.40.0"], ["--simulate-timeout", "1"]])
    return Case(argv, [], what, "estimate", names=[model, "--"]), text


SIM_STAND_IN = """import os, sys
sys.stdout.write(open(os.environ["FUZZ_SIM_ANSWER"], encoding="utf-8").read() + "\\n")
sys.exit(int(os.environ.get("FUZZ_SIM_RC", "0")))
"""
