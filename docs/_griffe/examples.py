"""A griffe extension for the API reference (mkdocs.yml loads it), so that unirnn's
docstrings render as written, without changing what they say:

- doctests are titled ``Example:`` or ``Example (what it shows):``, which the Google
  style parser does not know as a section (it knows ``Examples:``) and would render as
  prose, ``>>>`` lines as nested quotes: each such title becomes an ``Examples:``
  section, the parenthesis its first line, so the doctests render as code;
- ``spec, weights: the cell and its weights`` documents two arguments at once, which the
  parser would take for one argument named ``spec, weights``: it becomes one entry each;
- Sphinx roles (``:func:`build```, ``:class:`~unirnn.Weights```) become links where the
  name is documented on the site and code where it is not (a private module); a
  ``.. math::`` block becomes a code block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

TITLE = re.compile(r"^(?P<indent>[ \t]*)Example(?: \((?P<what>.*)\))?:[ \t]*$", flags=re.M)
ARGS = re.compile(r"^(?P<indent>[ \t]*)(Args|Arguments|Parameters|Params):[ \t]*$")
SHARED = re.compile(r"^(?P<names>\w+(?:, \w+)+): (?P<text>.*)$")
ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):`(?P<tilde>~?)(?P<name>[\w.]+)`")
MATH = re.compile(r"^[ \t]*\.\. math::[ \t]*$", flags=re.M)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _examples_section(match: re.Match[str], text: str) -> str:
    indent, what = match.group("indent"), match.group("what")
    if not what:
        return f"{indent}Examples:"
    following = text[match.end():].lstrip("\n")
    body_indent = following[: _indent(following)] or indent + "    "
    return f"{indent}Examples:\n{body_indent}{what}:\n"


def _split_shared_arguments(lines: list[str]) -> list[str]:
    out: list[str] = []
    section: int | None = None  # the Args title's indent while inside that section
    item: int | None = None  # the indent of its entries
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        title = ARGS.match(line)
        if title:
            section, item = len(title.group("indent")), None
            out.append(line)
            continue
        if section is not None and line.strip() and _indent(line) <= section:
            section = None
        shared = SHARED.match(line.strip()) if section is not None and line.strip() else None
        if item is None and section is not None and line.strip():
            item = _indent(line)
        if shared is None or _indent(line) != item:
            out.append(line)
            continue
        more = []  # the entry's continuation lines, deeper than the entry
        while index < len(lines) and lines[index].strip() and _indent(lines[index]) > item:
            more.append(lines[index])
            index += 1
        for name in shared.group("names").split(", "):
            out += [f"{line[:item]}{name}: {shared.group('text')}", *more]
    return out


def rewrite(text: str) -> str:
    """``text`` with ``Example...:`` titles, shared argument entries and math blocks
    rewritten (the roles need the object tree: :func:`link_roles`)."""
    text = TITLE.sub(lambda match: _examples_section(match, text), text)
    text = MATH.sub("", text)  # the indented equations after it are then a code block
    return "\n".join(_split_shared_arguments(text.split("\n")))


def _full_name(obj: griffe.Object, name: str) -> str | None:
    if name.startswith("unirnn"):
        return name
    head, _, rest = name.partition(".")
    try:
        found = obj.resolve(head)
    except Exception:  # a name griffe cannot place: shown as code, not linked
        return None
    return f"{found}.{rest}" if rest else found


def link_roles(obj: griffe.Object, text: str) -> str:
    """Each Sphinx role in ``text`` as an optional cross-reference: a link when the
    target is on the site, plain code otherwise (autorefs drops optional ones quietly)."""

    def link(match: re.Match[str]) -> str:
        name = match.group("name")
        title = f"<code>{name.rsplit('.', 1)[-1] if match.group('tilde') else name}</code>"
        target = _full_name(obj, name)
        if target is None:
            return title
        return f'<autoref identifier="{target}" optional>{title}</autoref>'

    return ROLE.sub(link, text)


class UnirnnDocstrings(griffe.Extension):
    """Rewrites each loaded object's docstring before it is parsed (see the module)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and not obj.is_alias:
            obj.docstring.value = link_roles(obj, obj.docstring.value)
