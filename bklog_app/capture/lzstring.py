"""LZ-String's `compressToBase64` undone: the `compression=lz64` bodies of older posthog-js.

LZ-String is an LZW variant over a string of UTF-16 code units. The compressed stream is a
sequence of codes, each written least significant bit first, in a width that starts at 2 bits
and grows by one whenever the dictionary outgrows it. Code 0 brings in a new 8-bit character,
code 1 a new 16-bit one, code 2 ends the stream; every other code names a dictionary entry, and
each step adds the previous phrase plus the first character of the current one. The base64 form
packs that bit stream six bits to a character of the usual base64 alphabet, highest bit first.

Written here from that description; decompression never grows the text past `max_chars`, so a
small body cannot expand without bound.
"""

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_VALUES = {char: value for value, char in enumerate(ALPHABET)}
_BITS_PER_CHAR = 6


class LZStringError(ValueError):
    """The text is not LZ-String's base64 output, or it ends early."""


class _BitReader:
    """The stream's bits, one code at a time: a code's first bit is its lowest."""

    def __init__(self, text: str):
        try:
            self.values = [_VALUES[char] for char in text]
        except KeyError as missing:
            raise LZStringError(f"{missing.args[0]!r} is not a base64 character") from None
        self.index = 0  # of the next value to read
        self.current = 0  # values[index - 1]
        self.mask = 0  # the bit of `current` to read next; 0: move on to the next value

    def read(self, width: int) -> int:
        code = 0
        for bit in range(width):
            if not self.mask:
                if self.index >= len(self.values):
                    raise LZStringError("the compressed text ends in the middle of a code")
                self.current = self.values[self.index]
                self.index += 1
                self.mask = 1 << (_BITS_PER_CHAR - 1)
            if self.current & self.mask:
                code |= 1 << bit
            self.mask >>= 1
        return code


def decompress_from_base64(text: str, max_chars: int) -> str:
    """The original string; LZStringError if `text` is not a complete stream, ValueError past max_chars."""
    if not text:
        return ""
    reader = _BitReader(text)
    dictionary: list[str] = ["", "", ""]  # codes 0-2 are the literal and end markers
    width = 2
    grow_in = 4  # entries to add before the code width grows

    def literal(code: int) -> str | None:
        if code == 0:
            return chr(reader.read(8))
        if code == 1:
            return chr(reader.read(16))
        return None

    first = literal(reader.read(width))
    if first is None:
        return ""
    dictionary.append(first)
    width = 3
    previous = first
    out = [first]
    length = 1
    while True:
        code = reader.read(width)
        if code == 2:
            break
        char = literal(code)
        if char is not None:
            dictionary.append(char)
            code = len(dictionary) - 1
            grow_in -= 1
            if grow_in == 0:
                grow_in, width = 1 << width, width + 1
        if code < len(dictionary):
            entry = dictionary[code]
        elif code == len(dictionary):
            entry = previous + previous[0]
        else:
            raise LZStringError(f"code {code} names no dictionary entry")
        out.append(entry)
        length += len(entry)
        if length > max_chars:
            raise ValueError(f"the decompressed text is longer than {max_chars} characters")
        dictionary.append(previous + entry[0])
        grow_in -= 1
        if grow_in == 0:
            grow_in, width = 1 << width, width + 1
        previous = entry
    # Characters are UTF-16 code units; a pair of surrogates is one character once joined.
    return "".join(out).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
