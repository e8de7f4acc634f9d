"""The privacy notice published with every session (guidebook 4.6), as HTML and plain text.

Rendered with ``string.Template`` from the packaged templates in ``pipeline/templates``; every
value is HTML-escaped for the HTML page. The output depends only on the notice config and the
session facts passed in (no render time), so republishing gives identical bytes.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from string import Template

from pipeline.config import NoticeConfig

# How the notice names what was done to faces and plates (``[redact] method``).
METHOD_WORDS = {"blur": "blurred", "pixelate": "pixelated", "fill": "covered with solid boxes"}


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What the notice says about the published set itself, and how it was redacted."""

    session_id: str
    captured_span: str
    published: int
    session_notice_version: str
    method: str = "blur"  # [redact] method of the run that published it

    def __post_init__(self) -> None:
        if self.method not in METHOD_WORDS:
            raise ValueError(f"unknown redaction method {self.method!r} (expected one of {', '.join(METHOD_WORDS)})")


def _template(name: str) -> Template:
    return Template(resources.files("pipeline").joinpath("templates", name).read_text(encoding="utf-8"))


def _values(notice: NoticeConfig, facts: SessionFacts) -> dict[str, str]:
    return {
        "language": notice.language,
        "version": notice.version,
        "operator": notice.operator,
        "contact": notice.contact,
        "details_url": notice.details_url,
        "purpose": notice.purpose,
        "area": notice.area,
        "period": notice.period,
        "captured": notice.captured,
        "processing": notice.processing,
        "retention": notice.retention,
        "third_parties": notice.third_parties,
        "requests": notice.requests,
        "session_id": facts.session_id,
        "captured_span": facts.captured_span,
        "published": str(facts.published),
        "session_notice_version": facts.session_notice_version,
        "redacted": METHOD_WORDS[facts.method],
    }


def notice_mismatch(notice: NoticeConfig, method: str) -> str | None:
    """What in the operator's notice text contradicts the redaction method, or None: the
    generated sentence follows the method, the operator's own paragraphs cannot."""
    if method == "blur":
        return None
    fields = ("processing", "retention", "third_parties", "requests", "captured")
    said = [f for f in fields if "blur" in str(getattr(notice, f)).lower()]
    if not said:
        return None
    return (f"the notice (version {notice.version}) says 'blur' in {', '.join(said)} but faces and plates are "
            f"{METHOD_WORDS[method]} ([redact] method = \"{method}\"): update notice.toml")


def render_html(notice: NoticeConfig, facts: SessionFacts) -> str:
    values = {k: html.escape(v, quote=True) for k, v in _values(notice, facts).items()}
    values["security_measures"] = "\n".join(f"<li>{html.escape(m)}</li>" for m in notice.security_measures)
    return _template("notice.html").substitute(values)


def render_text(notice: NoticeConfig, facts: SessionFacts) -> str:
    values = _values(notice, facts)
    values["security_measures"] = "\n".join(f"  - {m}" for m in notice.security_measures)
    return _template("notice.txt").substitute(values)
