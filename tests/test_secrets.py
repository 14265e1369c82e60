"""No secret leaves the process: each place one could appear, end to end through every output format."""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from doctor.secrets import ScrubbingStream, env_secrets, scrub, scrub_obj, split_credentials

FAKES = Path(__file__).parent / "fakes" / "nvml"
HF_TOKEN = "hf_" + "Ab3" * 12
PASSWORD = "s3cr3t-Pa55word"


@pytest.mark.parametrize("text,clean", [
    ("https://alice:s3cret@pypi.example/simple", "https://alice:***@pypi.example/simple"),
    (f"https://{HF_TOKEN}@hub.example/", "https://***@hub.example/"),
    ("https://git@github.com/org/repo", "https://git@github.com/org/repo"),          # a plain user name stays
    ("https://mirror.example/api?token=abc123&x=1", "https://mirror.example/api?token=***&x=1"),
    ("https://s3.example/o?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/2026", "https://s3.example/o?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer ***"),
    ("headers={'authorization': 'Basic YWxpY2U6czNjcmV0'}", "headers={'authorization': 'Basic ***'}"),
    (f"token {HF_TOKEN} in a message", "token *** in a message"),
    ("key AKIAIOSFODNN7EXAMPLE leaked", "key *** leaked"),
    ("no secret here: https://huggingface.co/Qwen/Qwen3-VL-32B-Instruct", "no secret here: https://huggingface.co/Qwen/Qwen3-VL-32B-Instruct"),
    ("/tmp/https:/alice:s3cret@h/x", "/tmp/https:/alice:***@h/x"),   # os.path.normpath collapsed the URL's //
    ("C:/data/file@v2", "C:/data/file@v2"),
    ("D:/data:v2@rev", "D:/data:v2@rev"),                             # a drive letter is no URL scheme
])
def test_scrub(text, clean):
    assert scrub(text, secrets=[]) == clean


def test_known_variables_are_scrubbed_wherever_they_appear():
    env = {"WANDB_API_KEY": "0123456789abcdef", "HF_TOKEN": "short", "PATH": "/usr/bin"}
    assert env_secrets(env) == ["0123456789abcdef"]          # too short to match safely: not listed
    assert scrub("key=0123456789abcdef; path /usr/bin", env_secrets(env)) == "key=***; path /usr/bin"
    doc = {"a": ["x 0123456789abcdef y", {"https://u:p@h/": 1}], "n": 3}
    assert scrub_obj(doc, env_secrets(env)) == {"a": ["x *** y", {"https://u:***@h/": 1}], "n": 3}


def test_credentials_split_for_the_request():
    assert split_credentials("https://al%40ce:p%3Ass@h.example:8443/s?q=1") == (
        "https://h.example:8443/s?q=1", ("al@ce", "p:ss"))
    assert split_credentials("https://h.example/s") == ("https://h.example/s", None)


def test_scrubbing_stream():
    class Sink:
        text = ""

        def write(self, t):
            Sink.text += t

        def isatty(self):
            return False

    stream = ScrubbingStream(Sink())
    stream.write("index https://bob:pw123456@idx/ ok\n")
    assert Sink.text == "index https://bob:***@idx/ ok\n" and stream.isatty() is False


class _Index(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_HEAD(self):
        _Index.seen.append(self.headers.get("Authorization"))
        self.send_response(200 if self.headers.get("Authorization") else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def index_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def _doctor(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "doctor", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


def test_no_secret_reaches_any_output(tmp_path, index_server):
    """Secrets in the index URL, the hub endpoint's query, a token variable and a profile's notes: none of them
    appears in the facts, the console, JSON or JUnit report, stderr, or the Python API's report; and the index
    with credentials is still reached (the credentials are used, as pip uses them)."""
    env = dict(os.environ, PYTHONPATH=str(FAKES), FAKE_NVML="partial", HF_TOKEN=HF_TOKEN,
               PIP_INDEX_URL=f"http://alice:{PASSWORD}@127.0.0.1:{index_server}/simple",
               HF_ENDPOINT=f"http://127.0.0.1:{index_server}/?access_token={PASSWORD}x")
    profile = tmp_path / "leaky.yaml"
    profile.write_text("kind: job\nextends: [base]\njob:\n  notes: ['mirror https://bob:" + PASSWORD + "@m.example/ '"
                       "]\n  workload: {model: opt-125m}\n", encoding="utf-8")
    outputs = []
    done = _doctor(["facts", "-o", str(tmp_path / "facts.json")], env, tmp_path)
    outputs += [done.stdout, done.stderr, (tmp_path / "facts.json").read_text()]
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["network"]["index"]["outcome"] == "ok" and facts["network"]["index"]["http_status"] == 200
    for fmt in ("console", "json", "junit"):
        out = tmp_path / f"report.{fmt}"
        done = _doctor(["check", "-p", str(profile), "--facts", str(tmp_path / "facts.json"), "--format", fmt,
                        "-o", str(out)], env, tmp_path)
        outputs += [done.stdout, done.stderr, out.read_text()]
        assert "mirror https://bob:***@m.example/" in done.stdout + out.read_text()
    api = subprocess.run([sys.executable, "-c", "import doctor, json, sys\n"
                          "try:\n r = doctor.preflight(sys.argv[1], facts=sys.argv[2])\n"
                          "except doctor.NotReady as e:\n r = e.report\n"
                          "print(json.dumps([x.to_dict() for x in r.results]) + json.dumps(r.facts) + str(r.notes))",
                          str(profile), str(tmp_path / "facts.json")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert api.returncode == 0, api.stderr
    outputs += [api.stdout, api.stderr]
    leaks = [(i, secret) for i, text in enumerate(outputs) for secret in (PASSWORD, HF_TOKEN) if secret in text]
    assert not leaks, leaks
    assert any(a is not None and a.startswith("Basic ") for a in _Index.seen)
