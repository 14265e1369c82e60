"""JUnit XML: one testcase per check (fail -> failure, error -> error, skip -> skipped, warn -> passed + system-out)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from ..model import Report, Status


def _text(result) -> str:
    lines = [result.summary, *result.details]
    if result.remediation:
        lines.append(f"Fix: {result.remediation.text}")
        lines.extend(f"  $ {c}" for c in result.remediation.commands)
    return "\n".join(lines)


def render(report: Report) -> str:
    suites = ET.Element("testsuites", name="doctor")
    suite = ET.SubElement(suites, "testsuite", name=f"doctor:{report.target}", tests=str(len(report.results)),
                          failures=str(report.count(Status.FAIL)), errors=str(report.count(Status.ERROR)),
                          skipped=str(report.count(Status.SKIP)),
                          time=f"{sum(r.duration_s for r in report.results):.6f}")
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"doctor.{r.check_id.split('.')[0]}",
                             name=r.check_id, time=f"{r.duration_s:.6f}")
        if r.status is Status.FAIL:
            ET.SubElement(case, "failure", message=r.summary).text = _text(r)
        elif r.status is Status.ERROR:
            ET.SubElement(case, "error", message=r.summary).text = _text(r)
        elif r.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=r.summary)
        elif r.status is Status.WARN:
            ET.SubElement(case, "system-out").text = "WARNING: " + _text(r)
    ET.SubElement(suite, "system-out").text = report.verdict()
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
