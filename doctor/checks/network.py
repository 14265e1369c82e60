"""Network reachability of the Hugging Face endpoint in use and of pip's index, when the job needs them."""
from __future__ import annotations

from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from doctor.model import NOT_ASKED, OFFLINE, Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check

from .packages import installed, requirements
from .storage import cached_repo, complete_revision

DEFAULT_HUB = "https://huggingface.co"
OUTCOME = {"dns": "its name does not resolve", "refused": "the connection is refused",
           "timeout": "it does not answer in time", "tls": "the TLS handshake fails", "error": "the request fails"}


def _why(result: dict[str, Any]) -> str:
    return f"{OUTCOME.get(result.get('outcome'), result.get('outcome'))} ({result.get('error')})"


@check("network.hub", needs=("network",), binds={"model": "job.workload.model"})
def network_hub(facts: dict[str, Any], *, model: str | None = None) -> Result:
    """The Hugging Face endpoint the job will use (HF_ENDPOINT, e.g. a mirror, else huggingface.co)
    answers, unless the job runs offline.

    Why: from_pretrained retries and then fails with a connection error after minutes; behind the
    Great Firewall huggingface.co is unreachable and a mirror must be set, and a mistyped mirror
    fails the same way.
    Fix: set HF_ENDPOINT to a reachable mirror, or pre-download the model and run with HF_HUB_OFFLINE=1.
    """
    net, hf = facts["network"], facts.get("hf") or {}
    hub = net.get("hub") or {}
    if net.get("offline") or hf.get("offline") or hub.get("outcome") == "skipped":
        return skipped("offline mode (--offline or HF_HUB_OFFLINE=1): the hub is not contacted", cause=OFFLINE)
    if not hub.get("outcome") or not hub.get("url"):
        return errored("could not decide: the facts hold no result of the hub probe")
    if hub.get("outcome") == "ok":
        took = f", {hub['elapsed_s']} s" if isinstance(hub.get("elapsed_s"), (int, float)) else ""
        return passed(f"{hub['url']} answers (HTTP {hub.get('http_status')}{took})")
    cached = bool(model and complete_revision(cached_repo(facts, model)))
    if hub["url"].rstrip("/") == DEFAULT_HUB:
        remedy = Remediation("huggingface.co is unreachable from here. Use a mirror, or download elsewhere and "
                             "copy the cache.", ("export HF_ENDPOINT=https://hf-mirror.com",),
                             "https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables")
    else:
        remedy = Remediation(f"HF_ENDPOINT points at {hub['url']}, which is unreachable: fix the URL, or unset "
                             "HF_ENDPOINT to use huggingface.co.", ("unset HF_ENDPOINT",),
                             "https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables")
    summary = f"{hub['url']} is unreachable: {_why(hub)}"
    if cached:
        return warned(summary + f"; {model} is already cached, so the job can run with HF_HUB_OFFLINE=1",
                      Remediation(remedy.text, ("export HF_HUB_OFFLINE=1", *remedy.commands), remedy.url))
    if model:
        return failed(summary + f"; the job must download {model}", remedy)
    return warned(summary, remedy)


def _to_install(facts: dict[str, Any], packages: dict[str, str] | None) -> list[str]:
    have = installed(facts)
    out = []
    for name, spec in requirements(packages).items():
        version = have.get(name)
        try:
            if version is None or (spec and Version(version) not in SpecifierSet(spec, prereleases=True)):
                out.append(name)
        except (InvalidVersion, InvalidSpecifier):
            out.append(name)
    if (facts.get("torch") or {}).get("installed") is False:
        out.append("torch")
    return out


@check("network.pypi", needs=("network",), binds={"packages": "job.software.packages"})
def network_pypi(facts: dict[str, Any], *, packages: dict[str, str] | None = None) -> Result:
    """pip's package index (PIP_INDEX_URL / pip.conf / PyPI) answers when the remedies would install something.

    Why: the fix for a missing or too-old package is a `pip install`; on a box whose index is
    unreachable that fix fails too, and a mirror must be configured first.
    Fix: configure a reachable index (`pip config set global.index-url <mirror>`).
    """
    net = facts["network"]
    index = net.get("index") or {}
    todo = _to_install(facts, packages)
    if not todo:
        return skipped("nothing to install: the job's packages and torch are present", cause=NOT_ASKED)
    if index.get("outcome") == "skipped":
        return skipped(f"offline mode; {', '.join(todo)} must be installed from a local wheel cache", cause=OFFLINE)
    if not index.get("outcome"):
        return errored(f"could not decide: {', '.join(todo)} must be installed and the facts hold no result of the "
                       "package-index probe")
    if index.get("outcome") == "ok":
        return passed(f"{index['url']} answers (HTTP {index.get('http_status')}) for installing {', '.join(todo)}",
                      f"index from: {net.get('index_source')}")
    return failed(f"{', '.join(todo)} must be installed but the index {index.get('url')} is unreachable: {_why(index)}",
                  Remediation("Point pip at a reachable index (a regional mirror or your internal one).",
                              ("pip config set global.index-url https://pypi.tuna.tsinghua.edu.cn/simple",),
                              "https://pip.pypa.io/en/stable/topics/configuration/"),
                  f"index from: {net.get('index_source')}")
