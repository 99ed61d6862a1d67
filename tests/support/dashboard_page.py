"""Test helpers (no tests): the dashboard page (totesys_local.dashboard.app) read back as a person reads it,
with the standard library's HTML parser: its sections, their figures, tables, captions, messages and charts,
and the filter form's state."""
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple


@dataclass
class Section:
    """One ``<section id="section-...">`` (or a nested ``<div id="section-...">``) as shown."""
    title: str = ""
    metrics: Dict[str, str] = field(default_factory=dict)
    # (headers, rows) of each table
    tables: List[Tuple[List[str], List[List[str]]]] = field(default_factory=list)
    captions: List[str] = field(default_factory=list)
    messages: List[Tuple[str, str]] = field(default_factory=list)  # (info|warning|error, text)
    charts: int = 0
    shapes: int = 0  # rect/circle/polyline inside its charts

    def rows(self, number=0):
        """The rows (cells as text) of its table number ``number``."""
        return self.tables[number][1]

    def records(self, number=0):
        """Its table number ``number`` as dicts keyed by the headers."""
        headers, rows = self.tables[number]
        return [dict(zip(headers, row)) for row in rows]


@dataclass
class ParsedPage:
    sections: Dict[str, Section] = field(default_factory=dict)
    messages: List[Tuple[str, str]] = field(default_factory=list)  # every message box on the page
    title: str = ""
    scripts: int = 0
    style_elements: int = 0
    inline_style_attributes: int = 0
    checked_currencies: List[str] = field(default_factory=list)
    currencies: List[str] = field(default_factory=list)
    dates: Dict[str, str] = field(default_factory=dict)
    form_method: Optional[str] = None

    def metrics(self):
        return {label: value for section in self.sections.values()
                for label, value in section.metrics.items()}


class _Reader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.page = ParsedPage()
        self.stack: List[str] = []  # the section ids we are in
        self.text: Optional[List[str]] = None
        self.capture: Optional[str] = None  # what the text being captured is
        self.message_kind: Optional[str] = None
        self.metric: Dict[str, str] = {}
        self.table: Optional[Tuple[List[str], List[List[str]]]] = None
        self.row: Optional[List[str]] = None
        self.in_head = False
        self.depth: List[str] = []

    @property
    def section(self) -> Optional[Section]:
        return self.page.sections[self.stack[-1]] if self.stack else None

    def _start_text(self, what):
        self.capture, self.text = what, []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if "style" in attributes:
            self.page.inline_style_attributes += 1
        if tag == "script":
            self.page.scripts += 1
        elif tag == "style":
            self.page.style_elements += 1
        elif tag == "form":
            self.page.form_method = attributes.get("method")
        elif tag == "input":
            if attributes.get("name") == "currency":
                self.page.currencies.append(attributes["value"])
                if "checked" in attributes:
                    self.page.checked_currencies.append(attributes["value"])
            elif attributes.get("type") == "date":
                self.page.dates[attributes["name"]] = attributes.get("value") or ""
        if tag in ("section", "div") and (attributes.get("id") or "").startswith("section-"):
            name = attributes["id"][len("section-"):]
            self.page.sections[name] = Section()
            self.stack.append(name)
            self.depth.append(tag)
            return
        if tag in ("section", "div"):
            self.depth.append("")
        if tag == "title" and not self.stack and not self.page.title:
            self._start_text("page-title")
        elif tag == "h2" and self.section is not None:
            self._start_text("title")
        elif tag == "div" and "message" in classes:
            self.message_kind = next(kind for kind in ("info", "warning", "error") if kind in classes)
            self._start_text("message")
        elif tag == "div" and "label" in classes:
            self._start_text("metric-label")
        elif tag == "div" and "value" in classes:
            self._start_text("metric-value")
        elif tag == "p" and "caption" in classes:
            self._start_text("caption")
        elif tag == "table":
            self.table = ([], [])
        elif tag == "tr" and self.table is not None:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self._start_text("cell")
        elif tag == "svg" and self.section is not None:
            self.section.charts += 1
        elif tag in ("rect", "circle", "polyline") and self.section is not None:
            self.section.shapes += 1

    def handle_endtag(self, tag):
        text = "".join(self.text).strip() if self.text is not None else None
        if tag in ("section", "div") and self.depth:
            if self.depth.pop() and self.stack:
                self.stack.pop()
        if self.capture == "page-title" and tag == "title":
            self.page.title, self.capture, self.text = text, None, None
        elif self.capture == "title" and tag == "h2":
            self.section.title, self.capture, self.text = text, None, None
        elif self.capture == "message" and tag == "div":
            found = (self.message_kind, text)
            self.page.messages.append(found)
            if self.section is not None:
                self.section.messages.append(found)
            self.capture, self.text = None, None
        elif self.capture == "metric-label" and tag == "div":
            self.metric["label"], self.capture, self.text = text, None, None
        elif self.capture == "metric-value" and tag == "div":
            self.section.metrics[self.metric.pop("label")] = text
            self.capture, self.text = None, None
        elif self.capture == "caption" and tag == "p":
            self.section.captions.append(text)
            self.capture, self.text = None, None
        elif self.capture == "cell" and tag in ("td", "th"):
            self.row.append(text)
            self.capture, self.text = None, None
        elif tag == "tr" and self.row is not None:
            if self.table[0]:
                self.table[1].append(self.row)
            else:
                self.table[0].extend(self.row)
            self.row = None
        elif tag == "table" and self.table is not None:
            if self.section is not None:
                self.section.tables.append(self.table)
            self.table = None

    def handle_data(self, data):
        if self.text is not None:
            self.text.append(data)


def parse_page(html: str) -> ParsedPage:
    """The page as shown: sections by id (without the ``section-`` prefix), messages, the form."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page
