"""Network facts: is the Hugging Face endpoint in use (HF_ENDPOINT, e.g. a mirror) reachable, and the
package index pip would use? Short timeouts; skipped offline. Any HTTP answer counts as reachable."""
from __future__ import annotations

import base64
import configparser
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import threading
from typing import Any

from ..probing import ProbeContext, probe
from ..secrets import scrub, split_credentials

DEFAULT_INDEX = "https://pypi.org/simple"
TIMEOUT_S = 3.0


def safe_url(url: str) -> str:
    """The URL without user-info and with token-like query values masked (index URLs often carry tokens)."""
    try:
        bare, _ = split_credentials(url)
    except ValueError:   # not parseable as a URL (a bad port, say): still never shown with its secrets
        return scrub(url)
    return scrub(bare)


def pip_index(environ: dict[str, str], home: str | None = None) -> tuple[str, str]:
    """(index URL, where it came from): $PIP_INDEX_URL, else pip config files (later wins), else PyPI."""
    if environ.get("PIP_INDEX_URL"):
        return environ["PIP_INDEX_URL"], "$PIP_INDEX_URL"
    home = home or os.path.expanduser("~")
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files = ["/etc/pip.conf", os.path.join(xdg, "pip", "pip.conf"), os.path.join(home, ".pip", "pip.conf")]
    if environ.get("VIRTUAL_ENV"):
        files.append(os.path.join(environ["VIRTUAL_ENV"], "pip.conf"))
    if environ.get("PIP_CONFIG_FILE"):
        files.append(environ["PIP_CONFIG_FILE"])
    found = (DEFAULT_INDEX, "pip default")
    for f in files:
        parser = configparser.ConfigParser()
        try:
            parser.read(f)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "index-url"):
                found = (parser.get(section, "index-url"), f)
    return found


def reach(url: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """One HEAD request. outcome: ok (any HTTP status) | dns | refused | timeout | tls | error."""
    t0 = time.monotonic()
    out: dict[str, Any] = {"url": safe_url(url), "outcome": "ok", "http_status": None, "error": None}
    try:
        bare, creds = split_credentials(url)   # used as pip uses them: as HTTP basic auth, never in the record
        headers = {"User-Agent": "doctor-preflight"}
        if creds is not None:
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(bare, method="HEAD", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (http/https only)
            out["http_status"] = resp.status
    except urllib.error.HTTPError as exc:
        out["http_status"] = exc.code
    except urllib.error.URLError as exc:
        reason = exc.reason
        out["error"] = str(reason)
        if isinstance(reason, socket.gaierror):
            out["outcome"] = "dns"
        elif isinstance(reason, ConnectionRefusedError):
            out["outcome"] = "refused"
        elif isinstance(reason, (socket.timeout, TimeoutError)):
            out["outcome"] = "timeout"
        elif "SSL" in type(reason).__name__ or "CERTIFICATE" in str(reason).upper():
            out["outcome"] = "tls"
        else:
            out["outcome"] = "error"
    except (socket.timeout, TimeoutError) as exc:
        out.update(outcome="timeout", error=str(exc) or "timed out")
    except (OSError, ValueError) as exc:
        out.update(outcome="error", error=f"{type(exc).__name__}: {exc}")
    out["elapsed_s"] = round(time.monotonic() - t0, 3)
    if out["error"]:
        out["error"] = scrub(str(out["error"]), [url])
    return out


def collect(environ: dict[str, str] | None = None, offline: bool = False,
            timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    hub = (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    index, index_source = pip_index(dict(env))
    targets = {"hub": hub, "index": index}
    out: dict[str, Any] = {"offline": offline, "timeout_s": timeout_s, "index_source": index_source,
                           "proxy": {k: safe_url(v) for k, v in env.items()
                                     if k.lower() in ("https_proxy", "http_proxy", "no_proxy")}}
    if offline:
        out.update({name: {"url": safe_url(url), "outcome": "skipped"} for name, url in targets.items()})
        return out
    # Daemon threads, not a pool: getaddrinfo ignores socket timeouts, and a stuck resolver
    # must not hold the process at exit.
    boxes: dict[str, dict[str, Any]] = {name: {} for name in targets}
    threads = [threading.Thread(target=lambda n=name, u=url: boxes[n].update(reach(u, timeout_s)), daemon=True)
               for name, url in targets.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s + 1.0
    for (name, url), t in zip(targets.items(), threads):
        t.join(max(0.0, deadline - time.monotonic()))
        out[name] = dict(boxes[name]) if not t.is_alive() else {
            "url": safe_url(url), "outcome": "timeout", "http_status": None,
            "error": f"no answer (name resolution or connect) within {timeout_s + 1:g} s"}
    return out


@probe("network", timeout_s=8)
def probe_network(ctx: ProbeContext, __: float) -> dict[str, Any]:
    return collect(offline=ctx.offline)
