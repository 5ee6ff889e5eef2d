"""The LZ-String decompressor (bklog_app/capture/lzstring.py) against lz-string 1.5.0's
compressToBase64 output: one- and two-byte literals, repeats, the empty string, and what it
refuses."""

import pytest

from bklog_app.capture.lzstring import LZStringError, decompress_from_base64

# (text, LZString.compressToBase64(text)), made with lz-string 1.5.0.
VECTORS = [
    ("", "Q==="),
    ("a", "IZA="),
    ("hello hello hello hello", "BYUwNmD2AEoTcq3FIA=="),
    ("中文字符 中文字符 ok", "rRynDTTq2oZN4ASpUPYGsg=="),
    ("ab" * 85, "IYI17SOrZ+6IcpqXrZj2siA="),
]


@pytest.mark.parametrize(("text", "compressed"), VECTORS)
def test_decompresses_lz_string_output(text, compressed):
    assert decompress_from_base64(compressed, max_chars=10_000) == text


def test_empty_input_is_the_empty_string():
    assert decompress_from_base64("", max_chars=10) == ""


def test_refuses_to_grow_past_max_chars():
    with pytest.raises(ValueError, match="longer than 100 characters"):
        decompress_from_base64("IYI17SOrZ+6IcpqXrZj2siA=", max_chars=100)


@pytest.mark.parametrize(
    ("compressed", "message"),
    [
        ("IZ A=", "' ' is not a base64 character"),
        ("BYUwNmD2", "the compressed text ends in the middle of a code"),
    ],
)
def test_refuses_what_is_not_a_whole_stream(compressed, message):
    with pytest.raises(LZStringError, match=message):
        decompress_from_base64(compressed, max_chars=10_000)
