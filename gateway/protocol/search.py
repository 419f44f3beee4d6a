"""Tool search for routes with ``tool_mode: search``: two tools stand in for the whole catalog.

Pure and sans-IO. :class:`ToolIndex` is an Okapi BM25 index over a caller's view of a route's
tools (names, titles, descriptions and parameter names and descriptions, with a name hit worth
more), built once per catalog version and view; :func:`meta_tools` are the two tools such a route
lists (``search_tools`` and ``call_tool``); :func:`parse_search_arguments` and
:func:`search_result` read a search call and write its answer. No model, no download: words only.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from .catalog import Entry, entry_str
from .jsonrpc import decode_any

SEARCH_TOOL: Final = "search_tools"
CALL_TOOL: Final = "call_tool"
DEFAULT_LIMIT: Final = 10
MAX_LIMIT: Final = 50
MAX_QUERY_TERMS: Final = 32  # a client's query is untrusted: its work is bounded

K1: Final = 1.2
B: Final = 0.75
# How much a hit in each field counts (BM25F-style weighted term frequencies): a word of the
# name says what the tool is, a word of a parameter only what it takes.
WEIGHTS: Final = {"name": 3.0, "title": 2.0, "description": 1.0, "params": 0.5}
EXACT_BONUS: Final = 1000.0  # the query is the tool's name (with or without its server prefix): first
_PREFIX_FACTOR: Final = 0.5  # a query word that is only the start of indexed words counts half
_MAX_EXPANSIONS: Final = 10
_MAX_FIELD: Final = 8192  # characters of one field that are indexed (an upstream's text is untrusted)
_MAX_PARAMS: Final = 100

_WORD: Final = re.compile(r"[^\W_]+")  # runs of letters and digits in any script; `_`, `-`, `.` split
_PARTS: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")  # camelCase, HTTPServer
STOP_WORDS: Final = frozenset("""
a about an and any are as at be been but by can could do does for from has have how i if in into is it
its me my of on or our please should so some such than that the their them then there these this those
to us was we were what when where which while who will with would you your
""".split())


def _stem(word: str) -> str:
    """A light plural fold (files -> file, queries -> query), the same for index and query."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@functools.lru_cache(maxsize=65536)
def _terms(word: str) -> tuple[str, ...]:
    """The terms of one word (cached: a catalog's words repeat, and building an index is mostly this)."""
    out: list[str] = []
    for part in _PARTS.findall(word) if word.isascii() else [word]:
        term = _stem(part.casefold())
        if (len(term) > 1 or term.isdigit()) and term not in STOP_WORDS:
            out.append(term)
    return tuple(out)


def tokens(text: str) -> list[str]:
    """The search terms of ``text``: words split at non-letters and camelCase, lowercased, folded,
    without stop words and single letters (digits stay)."""
    out: list[str] = []
    for word in _WORD.findall(text):
        out += _terms(word[:100])  # (a longer "word" is no word a query would hold)
    return out


def _normal(text: str) -> str:
    """A name's comparable form: ``get_current_time``, ``getCurrentTime`` and ``get current time`` agree."""
    return " ".join(_stem(p.casefold()) for w in _WORD.findall(text)
                    for p in (_PARTS.findall(w) if w.isascii() else [w]))


def _param_text(entry: Entry) -> str:
    """The names and descriptions of a tool's top-level parameters."""
    raw = entry.get("inputSchema")
    schema = decode_any(raw) if raw is not None else None
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return ""
    words: list[str] = []
    for key, spec in list(props.items())[:_MAX_PARAMS]:
        words.append(str(key)[:200])
        if isinstance(spec, dict) and isinstance(spec.get("description"), str):
            words.append(spec["description"][:1000])
    return " ".join(words)[:_MAX_FIELD]


class ToolIndex:
    """An Okapi BM25 index over tool entries (as ``tools/list`` serves them).

    Built once per catalog version and caller view; :meth:`search` is then a walk over the
    postings of the query's terms. Ties are broken by name, so the same query over the same
    tools always answers the same list.
    """

    def __init__(self, entries: Sequence[Entry], *, separator: str = "__") -> None:
        named = [(name, e) for e in entries if (name := entry_str(e, "name")) is not None]
        named.sort(key=lambda item: item[0])
        self.names = [name for name, _ in named]
        self.entries = [e for _, e in named]
        self._exact: dict[str, list[int]] = {}  # normalized full or unprefixed name -> documents
        postings: dict[str, dict[int, float]] = {}
        lengths: list[float] = []
        for doc, (name, entry) in enumerate(named):
            short = name.split(separator, 1)[1] if separator and separator in name else name
            for form in {_normal(name), _normal(short)}:
                if form:
                    self._exact.setdefault(form, []).append(doc)
            fields = (("name", name), ("title", entry_str(entry, "title") or ""),
                      ("description", entry_str(entry, "description") or ""), ("params", _param_text(entry)))
            length = 0.0
            for field, text in fields:
                weight = WEIGHTS[field]
                for term in tokens(text[:_MAX_FIELD]):
                    row = postings.setdefault(term, {})
                    row[doc] = row.get(doc, 0.0) + weight
                    length += weight
            lengths.append(length)
        self._postings = {term: sorted(row.items()) for term, row in postings.items()}
        self._vocabulary = sorted(self._postings)
        self._lengths = lengths
        self._average = (sum(lengths) / len(lengths)) if lengths else 0.0
        count = len(named)
        self._idf = {term: math.log((count - len(row) + 0.5) / (len(row) + 0.5) + 1.0)
                     for term, row in self._postings.items()}

    def __len__(self) -> int:
        return len(self.entries)

    def _expand(self, term: str) -> list[tuple[str, float]]:
        """The indexed terms a query term stands for: itself, or else (3+ letters) those it starts."""
        if term in self._postings:
            return [(term, 1.0)]
        if len(term) < 3:
            return []
        vocabulary = self._vocabulary
        found: list[tuple[str, float]] = []
        at = bisect.bisect_left(vocabulary, term)
        while at < len(vocabulary) and vocabulary[at].startswith(term) and len(found) < _MAX_EXPANSIONS:
            found.append((vocabulary[at], _PREFIX_FACTOR))
            at += 1
        return found

    def scores(self, query: str) -> dict[int, float]:
        """Each matching document's score for ``query`` (empty when no word of it matches)."""
        query = query[:4096]
        terms = list(dict.fromkeys(tokens(query)))[:MAX_QUERY_TERMS]
        acc: dict[int, float] = {}
        average = self._average or 1.0
        lengths = self._lengths
        for term in terms:
            for indexed, factor in self._expand(term):
                idf = self._idf[indexed] * factor
                for doc, tf in self._postings[indexed]:
                    norm = K1 * (1.0 - B + B * lengths[doc] / average)
                    acc[doc] = acc.get(doc, 0.0) + idf * tf * (K1 + 1.0) / (tf + norm)
        for doc in self._exact.get(_normal(query), ()):
            acc[doc] = acc.get(doc, 0.0) + EXACT_BONUS
        return acc

    def find(self, query: str, limit: int = DEFAULT_LIMIT) -> tuple[list[tuple[Entry, float]], int]:
        """The best ``limit`` tools for ``query`` with their scores, best first (ties by name), and
        how many matched in all."""
        acc = self.scores(query)
        names = self.names
        ranked = sorted(acc.items(), key=lambda item: (-round(item[1], 9), names[item[0]]))
        return [(self.entries[doc], score) for doc, score in ranked[:max(0, limit)]], len(ranked)

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> list[tuple[Entry, float]]:
        """The best ``limit`` tools for ``query`` with their scores, best first (ties by name).

        A query without a searchable word (empty, blanks, only stop words) matches nothing
        here (see :meth:`searchable`): :meth:`browse` is what to show then.
        """
        return self.find(query, limit)[0]

    def searchable(self, query: str) -> bool:
        """Whether ``query`` has something to search for: a word that is not a stop word, or a name."""
        query = query[:4096]
        return bool(tokens(query)) or _normal(query) in self._exact

    def browse(self, limit: int = DEFAULT_LIMIT) -> list[tuple[Entry, float]]:
        """The first ``limit`` tools by name (what an empty query gets)."""
        return [(e, 0.0) for e in self.entries[:max(0, limit)]]


# -- the two tools a search-mode route lists ------------------------------------------------------
def meta_tools(servers: Iterable[str]) -> list[dict[str, Any]]:
    """The ``tools/list`` of a search-mode route: a search tool and a call tool."""
    where = ", ".join(servers)
    return [
        {
            "name": SEARCH_TOOL,
            "title": "Search tools",
            "description": (
                "Find the tools this server offers (there are too many to list) by words in their names and "
                "descriptions. Answers the best matches, best first, each with its name, description and "
                "inputSchema; then call one with call_tool. Search again with other words if nothing fits; an "
                "empty query lists the tools by name." + (f" The tools come from: {where}." if where else "")),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": (
                        "What you want to do, in a few words (e.g. 'current time in a timezone'), or a tool's name")},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT,
                              "description": f"How many tools to return at most (default {DEFAULT_LIMIT}, "
                                             f"at most {MAX_LIMIT})"},
                },
                "required": ["query"],
            },
            "annotations": {"title": "Search tools", "readOnlyHint": True, "idempotentHint": True,
                            "openWorldHint": False},
        },
        {
            "name": CALL_TOOL,
            "title": "Call a tool",
            "description": (
                "Call one of this server's tools by its exact name, as search_tools returned it, with arguments "
                "that match that tool's inputSchema. Answers exactly what the tool answers. Use search_tools "
                "first to find the name and the schema."),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The tool's exact name, from search_tools"},
                    "arguments": {"type": "object", "description": "The tool's arguments, as its inputSchema says",
                                  "additionalProperties": True},
                },
                "required": ["name"],
            },
        },
    ]


def parse_search_arguments(arguments: Any) -> tuple[str, int]:
    """``(query, limit)`` of a ``search_tools`` call; ValueError says what is wrong.

    A missing or null query is the empty query; a limit above the maximum is cut to it.
    """
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ValueError(f"{SEARCH_TOOL} takes an object of arguments")
    query = arguments.get("query")
    if query is None:
        query = ""
    if not isinstance(query, str):
        raise ValueError(f"{SEARCH_TOOL}: query must be a string")
    limit = arguments.get("limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    if isinstance(limit, float) and limit.is_integer():
        limit = int(limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{SEARCH_TOOL}: limit must be an integer from 1 to {MAX_LIMIT}")
    return query, min(limit, MAX_LIMIT)


_SHOWN: Final = ("name", "title", "description", "inputSchema", "annotations")
_encoder: Final = msgspec.json.Encoder()


def search_result(query: str, index: ToolIndex, limit: int) -> bytes:
    """The ``tools/call`` result of a search: the hits as JSON text and as structuredContent.

    Each hit carries the fields of its ``tools/list`` entry byte for byte (the name clients call
    it by, title, description, inputSchema, annotations).
    """
    if index.searchable(query):
        hits, matched = index.find(query, limit)
        note = None if hits else ("No tool matched these words: try other words (what the tool does, or "
                                  "part of its name), or an empty query to list the tools by name.")
    else:
        hits = index.browse(limit)
        matched = len(index)
        note = (f"No query words: these are the first {len(hits)} of {len(index)} tools by name; "
                "search with words to find the ones you need.")
    found: dict[str, Any] = {
        "query": query[:1000],
        "tools": [{k: entry[k] for k in _SHOWN if k in entry} for entry, _ in hits],
        "matched": matched,
        "total": len(index),
    }
    if note is not None:
        found["note"] = note
    body = _encoder.encode(found)
    text = _encoder.encode(body.decode("utf-8", "replace"))
    return b'{"content":[{"type":"text","text":' + text + b'}],"structuredContent":' + body + b'}'
