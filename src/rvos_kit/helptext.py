"""--help texts: one plain-text description per verb, defaults shown.

The verbs' descriptions are their modules' docstrings, written for readers of the code
too. ``plain`` turns their reStructuredText markup into what a terminal should show:
double backquotes become single ones, cross-reference roles become the bare name (a
parenthesised reference to code is dropped), a ``::`` literal-block marker becomes a
colon. ``verb_section`` picks one verb's part of a docstring that documents several
(a paragraph headed by the verb's name, its text indented below). ``HelpFormatter``
keeps the description's layout and appends ``(default: X)`` to every option whose help
does not already say its default. ``md_text`` escapes a name (a video id, a node, a file)
for the Markdown the reports and summaries write.
"""

from __future__ import annotations

import argparse
import re
import textwrap

_ROLE_ALONE = re.compile(r"\s*\(:[a-z]+:`[^`]+`\)")
_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?([\w]+)`")


def plain(text: str | None) -> str | None:
    if not text:
        return text
    text = _ROLE_ALONE.sub("", text)
    text = _ROLE.sub(r"`\1`", text)
    text = text.replace("``", "`")
    text = re.sub(r"(\S)::$", r"\1:", text, flags=re.M)
    text = re.sub(r"^::$\n?", "", text, flags=re.M)
    return text


def verb_section(doc: str, verb: str) -> str:
    """The text under the line ``verb`` in ``doc`` (dedented), up to the next line that
    is not indented."""
    lines = doc.splitlines()
    try:
        start = lines.index(verb) + 1
    except ValueError:
        raise ValueError(f"docstring has no section {verb!r}") from None
    body = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        body.append(line)
    return textwrap.dedent("\n".join(body)).strip() + "\n"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; options show their defaults."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if text == argparse.SUPPRESS or "default" in text.lower() or "%(default)" in text:
            return text
        if not action.option_strings or action.nargs == 0:  # positionals, flags
            return text
        if action.default is None or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


# Characters that start Markdown markup or raw HTML ("_" only at a word's edge: inside a
# word it is never emphasis, so snake_case names stay as they were written).
_MD_SPECIAL = re.compile(
    r"[\\`*\[\]<>|~]|&(?=#?\w+;)|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])"
)  # "&" only where it would start an entity (J&F stays J&F)


def md_text(x) -> str:
    """``x`` as literal Markdown text (CommonMark backslash escapes): a video id like
    ``<img src=x onerror=...>`` or ``a|b`` shows as written, never as HTML or markup.
    Line breaks become spaces and a leading ``#`` is escaped, so a name never starts a
    block of its own (a heading, an HTML block)."""
    text = _MD_SPECIAL.sub(lambda m: "\\" + m[0], re.sub(r"[\r\n]+", " ", str(x)))
    return "\\" + text if text.startswith("#") else text
