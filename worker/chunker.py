"""When streamed text is flushed into the row: after every token, word or sentence.

Pure and synchronous: feed it the model's text pieces, it returns the pieces to
write. Whatever the granularity, the concatenation of every flush plus
``finish()`` equals the concatenation of everything fed (with a UTF-16
surrogate pair split across two pieces joined into its character).
"""

from __future__ import annotations

import re

GRANULARITIES = ("token", "word", "sentence")

# Words that end in a period without ending the sentence.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st vs etc eg e.g ie i.e cf al approx inc ltd co corp
    fig no vol pp ca dept est min max jan feb mar apr jun jul aug sep sept oct nov dec
    """.split()
)

# A sentence ends at . ! ? … (or a run of them, "..." included), maybe followed by
# closing quotes or brackets, then whitespace. CJK full stops end one with or
# without whitespace.
_SENTENCE_END = re.compile(r"""(?:[.!?…]+["'”’»)\]]*\s+|[。！？]+["'”’»)\]]*\s*)""")
_WORD_BEFORE = re.compile(r"(\S+)$")


def _split_surrogate_tail(text: str) -> tuple[str, str]:
    """Hold back a trailing lone high surrogate until its pair arrives."""
    if text and "\ud800" <= text[-1] <= "\udbff":
        return text[:-1], text[-1]
    return text, ""


def _join_surrogates(text: str) -> str:
    """Combine UTF-16 surrogate pairs (from a pair split across tokens) into characters."""
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _ends_sentence(buffer: str, end: int) -> bool:
    """Whether the terminator just before ``end`` really ends a sentence."""
    stripped = buffer[:end].rstrip()
    if not stripped.endswith("."):
        return True  # ! ? … and CJK are not used for abbreviations
    if stripped.endswith(".."):
        return True  # an ellipsis
    match = _WORD_BEFORE.search(stripped[:-1])
    if match is None:
        return True
    word = match.group(1).lower().lstrip("(\"'“‘")
    if word in ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. R. R. Tolkien"
    if word.isdigit() and (match.start() == 0 or stripped[match.start() - 1] == "\n"):
        return False  # a numbered list item: "1. First"
    return True


class Chunker:
    """Buffers streamed text and says when to flush it, per ``granularity``."""

    def __init__(self, granularity: str) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {granularity!r}; use one of {GRANULARITIES}")
        self.granularity = granularity
        self._buffer = ""
        self._pending_surrogate = ""

    def feed(self, piece: str) -> list[str]:
        """Take one piece of streamed text; return the texts to flush now, in order."""
        if not piece:
            return []
        piece = self._pending_surrogate + piece
        piece, self._pending_surrogate = _split_surrogate_tail(piece)
        self._buffer += _join_surrogates(piece)
        if not self._buffer:
            return []
        cut = self._cut_point()
        if cut <= 0:
            return []
        flushed, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return [flushed]

    def finish(self) -> str:
        """The rest, at the end of the stream ("" when there is none)."""
        rest = self._buffer + _join_surrogates(self._pending_surrogate)
        self._buffer = self._pending_surrogate = ""
        return rest

    def _cut_point(self) -> int:
        buffer = self._buffer
        if self.granularity == "token":
            # Do not end a write inside a ZWJ emoji sequence.
            return len(buffer) - 1 if buffer.endswith("\u200d") else len(buffer)
        if self.granularity == "word":
            # Up to the end of the last whitespace that follows some text.
            last_space = next(
                (i for i in range(len(buffer) - 1, -1, -1) if buffer[i].isspace()), -1
            )
            if last_space <= 0 or not buffer[:last_space].strip():
                return 0
            return last_space + 1
        # sentence: the last newline or real sentence end in the buffer, as long
        # as what it flushes has some text (a lone newline waits for its line)
        cut = buffer.rfind("\n") + 1
        for match in _SENTENCE_END.finditer(buffer, cut):
            end = match.start() + len(match.group().rstrip())
            if match.end() > cut and _ends_sentence(buffer, end):
                cut = match.end()
        return cut if buffer[:cut].strip() else 0
