"""Text from profiles, facts and remote sources reaches the terminal with its control characters escaped."""
from __future__ import annotations

from doctor.output import printable

EVIL = "evil\x1b[2J\x1b]0;owned\x07\r\u202etxt"


def test_printable_escapes_every_control_and_bidi_character():
    shown = printable(EVIL)
    assert shown == "evil\\x1b[2J\\x1b]0;owned\\x07\\r\\u202etxt"
    assert printable("A800 80GB — 模型 ✓") == "A800 80GB — 模型 ✓"      # ordinary text, any script, is kept


def test_notes_names_and_summaries_from_a_profile_are_escaped(cli, facts_file, recorded, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text('kind: job\nextends: [base]\ndescription: "' + EVIL.encode("unicode_escape").decode()
                       + '"\njob:\n  notes: ["' + EVIL.encode("unicode_escape").decode() + '"]\n', encoding="utf-8")
    for args in (("check", "-p", str(profile), "--facts", facts_file(recorded)), ("profiles", "show", str(profile))):
        _, out, err = cli(*args)
        assert "\x1b" not in out + err and "\x07" not in out + err and "\u202e" not in out + err
        assert "\\x1b[2J" in out
