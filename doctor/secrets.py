"""No secret leaves the process: one scrubber applied to every fact, message, remedy, exception text and log
line before it is printed, written or returned (reports travel: CI artifacts, bug reports, fleet merges).

Scrubbed, always (`--redact` removes identifying data on top of this, see redact.py):
- the password (and a token-like user name) in any URL's user-info: https://user:pass@host -> https://user:***@host;
- token-like query parameters: ?token=..., access_token, api_key, key, sig, signature, password, secret, auth,
  X-Amz-Signature / X-Amz-Credential / X-Amz-Security-Token, ...;
- `Authorization: Bearer|Basic|token ...` headers;
- well-known token shapes (Hugging Face hf_..., GitHub ghp_/github_pat_..., OpenAI-style sk-..., AWS AKIA...,
  Slack xox?-..., JWTs);
- the value of every known secret variable set in this process's environment (HF_TOKEN, WANDB_API_KEY, ...),
  wherever it appears.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

MASK = "***"
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_TOKEN", "WANDB_API_KEY",
               "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN", "COMET_API_KEY",
               "NEPTUNE_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
               "GOOGLE_API_KEY", "MODELSCOPE_API_TOKEN", "KAGGLE_KEY", "PIP_PASSWORD", "TWINE_PASSWORD",
               "NGC_API_KEY", "DOCKER_PASSWORD")
# user-info in a URL: scheme://user[:password]@ — the password part always goes; so does a user name that is a token
# Every repeat before a literal is bounded ({0,64}): an unbounded one is re-tried from each word boundary of a long
# run such as "a.a.a...", which made scrubbing a 100k-character string quadratic (seconds).
# "scheme:/" too: a path normalised by os.path.normpath collapses the URL's "//"; a scheme has two letters or more
# (a drive letter, D:/data:v2@rev, is not one)
USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]{1,31}:/{1,2})(?P<user>[^\s/@:?#]*)"
                      r"(?::(?P<pw>[^\s/@?#]*))?@")
QUERY = re.compile(r"(?P<key>[?&;](?:[\w.-]{0,64}(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|apikey|auth|sig|"
                   r"signature|credential|session)[\w.-]{0,64}|key|code))=(?P<value>[^&#\s\"']+)", re.I)
AUTH_HEADER = re.compile(r"(?P<head>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token|digest)?\s*)"
                         r"(?P<value>[^\s\"',;]+)", re.I)
TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})")

AUTH_HINT = re.compile(r"authorization", re.I)


def _token_like(user: str) -> bool:
    return bool(TOKEN_SHAPES.fullmatch(user)) or (len(user) >= 24 and not re.fullmatch(r"[a-z._-]+", user))


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of known secret variables set in the environment (8 characters or more), longest first."""
    env = os.environ if environ is None else environ
    values = {env[k] for k in SECRET_VARS if len(env.get(k) or "") >= 8}
    return sorted(values, key=len, reverse=True)


def _userinfo(m: re.Match[str]) -> str:
    user, pw = m.group("user"), m.group("pw")
    if pw is None and not _token_like(user):
        return m.group(0)                       # https://git@host: a plain user name, kept
    shown = MASK if _token_like(user) else user
    return f"{m.group('scheme')}{shown}:{MASK}@" if pw is not None else f"{m.group('scheme')}{MASK}@"


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every secret replaced by ***."""
    if not text:
        return text
    for value in env_secrets() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, MASK)
    # each pattern only where the characters it cannot match without are there: most strings of a snapshot
    # (paths, hashes, versions; 10k hub repos are ~600k of them) then cost one pattern, not four
    if "@" in text:
        text = USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = QUERY.sub(lambda m: f"{m.group('key')}={MASK}", text)
    if AUTH_HINT.search(text):
        text = AUTH_HEADER.sub(lambda m: f"{m.group('head')}{MASK}", text)
    return TOKEN_SHAPES.sub(MASK, text)


def scrub_obj(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string scrubbed. Each distinct string is
    scrubbed once per call: a snapshot repeats its keys and small values (10k hub repos: ~40k dicts)."""
    known = env_secrets() if secrets is None else list(secrets)
    done: dict[str, str] = {}

    def one(text: str) -> str:
        out = done.get(text)
        if out is None:
            out = done[text] = scrub(text, known)
        return out

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return one(node)
        if isinstance(node, dict):
            return {one(k) if isinstance(k, str) else k: walk(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        return node

    return walk(value)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(the URL without user-info, (user, password) or None): the request is made with the credentials as an
    Authorization header, as pip does, and only the bare URL is ever recorded."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=host)), (unquote(parts.username or ""), unquote(parts.password or ""))


class ScrubbingStream:
    """A text stream that scrubs what is written to it (doctor's stdout and stderr while a command runs)."""

    def __init__(self, stream: Any):
        self._stream = stream
        self._secrets = env_secrets()

    def write(self, text: str) -> int:
        self._stream.write(scrub(text, self._secrets))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
