"""`ipvsadm -R` input as ipvsadm 1.31 reads it (config_stream.c): words of a line, `ipvsadm` dropped.

Each line is split on spaces, tabs and CRs into an argv whose argv[0] is the program name; a word
that is exactly `ipvsadm` is dropped wherever it stands; a line with no other word is skipped. Two
quirks are kept: `#` starts no comment (config_stream's check never matches, so a comment line is
parsed as options and ends the restore with the usage hint), and a final line whose last word is
followed by two or more blanks and no newline is lost.
"""

from __future__ import annotations

from collections.abc import Iterator

_BLANKS = " \t\r"


def config_stream_lines(text: str, program: str) -> Iterator[list[str]]:
    """Yield the argv of each line of `text` as config_stream_read() builds it."""
    pos = 0
    n = len(text)
    while pos < n:
        argv = [program]
        ntoken = 0
        while True:
            if pos >= n:  # fscanf hit EOF
                if ntoken == 0:
                    return
                yield argv
                return
            ch = text[pos]
            if ch in _BLANKS or ch == "\n":
                # the token conversion fails: skip blanks up to a newline, a word, or EOF
                while True:
                    if pos >= n:
                        return  # EOF while skipping: the line is dropped
                    ch = text[pos]
                    pos += 1
                    if ch == "\n":
                        break
                    if ch not in _BLANKS:
                        pos -= 1
                        break
                if ch == "\n":
                    yield argv
                    break
                continue
            end = pos
            while end < n and text[end] not in _BLANKS and text[end] != "\n":
                end += 1
            token = text[pos:end]
            tail = text[end] if end < n else ""
            pos = end + 1 if end < n else end
            if token != "ipvsadm":
                argv.append(token)
                ntoken += 1
            if tail == "\n":
                yield argv
                break
