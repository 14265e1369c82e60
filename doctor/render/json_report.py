"""JSON report (versioned schema: doctor/schemas/report.schema.json)."""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from .. import __version__
from ..model import Report, Status

REPORT_SCHEMA_VERSION = "1.1"


def to_dict(report: Report) -> dict[str, Any]:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "doctor_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "target": report.target,
        "profiles": report.profiles,
        "verdict": {
            "ready": report.ready,
            "exit_code": int(report.exit_code),
            "strict": report.strict,
            "summary": report.verdict(),
            "counts": {s.value: report.count(s) for s in Status},
        },
        "notes": report.notes,
        "results": [r.to_dict() for r in report.results],
        "facts": report.facts,
    }


def render(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2) + "\n"
