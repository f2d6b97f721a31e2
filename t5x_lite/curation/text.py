"""Text utilities: normalisation, PII masking, word splitting and the dedup text form.

Normalisation changes text only in ways a reader would not notice: Unicode NFC, mojibake
repair (ftfy, with quote uncurling and width folding off), control characters removed, Unicode
spaces made plain, trailing spaces and runs of blank lines dropped. ASCII text skips ftfy and
NFC (it is already both), which is most of an English crawl.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import regex

# C0/C1 control characters except tab and newline; BOM and other invisible noise.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe]")
_UNICODE_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING_SPACE = re.compile(r"[ \t]+(?=\n|$)")
_SPACE_RUNS = re.compile(r"(?<=\S)[ \t]{2,}")
_BLANK_LINES = re.compile(r"\n{3,}")

# PII (datatrove's PIIFormatter expressions; a regex module would be slower here).
EMAIL = re.compile(
  r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
  r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
  r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"
)
IPV4 = re.compile(
  r"(?<![\d.])(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}"
  r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)(?![\d]|\.\d)"
)

_DIGIT_DOT = re.compile(r"\d\.\d")

# Words as datatrove's English tokenizer splits them (closely): runs of letters/digits (with
# inner apostrophes) and runs of punctuation are separate words.
_WORDS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")

# Dedup text form (datatrove's simplify_text): lower case, digits -> 0, punctuation -> space,
# whitespace collapsed, diacritics removed.
_NUMBERS = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]{1}\p{Nd}+)?")
_PUNCTUATION = regex.compile(r"[\p{P}\p{S}\p{Cc}]+")
_MARKS = regex.compile(r"\p{Mn}+")
_WHITESPACE = re.compile(r"\s+")
_ASCII_NUMBERS = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
_ASCII_PUNCTUATION = re.compile(r"[^a-z0-9 \t\n\r\f\v]+")


def normalize(text: str, config: Any) -> str:
  """`text` normalised as `config` (the `normalize` section) says; may return ''."""
  if not text.isascii():
    if config.ftfy:
      import ftfy

      text = ftfy.fix_text(
        text,
        unescape_html=False,
        uncurl_quotes=False,
        fix_character_width=False,
        fix_latin_ligatures=False,
        normalization="NFC" if config.nfc else None,
      )
    elif config.nfc:
      text = unicodedata.normalize("NFC", text)
  # (the `in` checks are memchr-fast and skip regex passes that would change nothing)
  if config.control_characters:
    if "\r" in text:
      text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
  if config.whitespace:
    if not text.isascii():
      text = _UNICODE_SPACES.sub(" ", text)
    if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
      text = _TRAILING_SPACE.sub("", text)
    if config.collapse_spaces and ("  " in text or "\t" in text):
      text = _SPACE_RUNS.sub(" ", text)
    if "\n\n\n" in text:
      text = _BLANK_LINES.sub("\n\n", text)
    text = text.strip("\n")
    if not text.strip():
      return ""
  return text


def _global_ip(match: re.Match) -> str | None:
  octets = [int(x) for x in match.group(0).split(".")]
  a, b = octets[0], octets[1]
  private = (
    a in (0, 10, 127)
    or (a == 100 and 64 <= b <= 127)
    or (a == 169 and b == 254)
    or (a == 172 and 16 <= b <= 31)
    or (a == 192 and b == 168)
    or (a == 192 and b == 0)
    or (a == 198 and b in (18, 19, 51))
    or (a == 203 and b == 0 and octets[2] == 113)
    or a >= 224
  )
  return None if private else match.group(0)


def mask_pii(text: str, config: Any) -> tuple[str, int, int]:
  """(text with e-mail and IP addresses replaced by the placeholders, e-mails, IPs replaced).

  Only public IPv4 addresses are masked (as datatrove): 127.0.0.1 or 192.168.x.y are not PII.
  """
  emails = ips = 0
  if config.email and "@" in text:
    text, emails = EMAIL.subn(config.email_placeholder, text)
  if config.ip and _DIGIT_DOT.search(text):

    def replace(match: re.Match) -> str:
      nonlocal ips
      if config.public_ips_only and _global_ip(match) is None:
        return match.group(0)
      ips += 1
      return config.ip_placeholder

    text = IPV4.sub(replace, text)
  return text, emails, ips


def split_words(text: str) -> list[str]:
  """Words and punctuation runs of `text` (the unit of the Gopher/FineWeb rules)."""
  return _WORDS.findall(text)


def simplify(text: str) -> str:
  """The text form MinHash and decontamination compare (datatrove's `simplify_text`)."""
  if text.isascii():  # the same result through `re`, faster than the `regex` module
    text = _ASCII_NUMBERS.sub("0", text.lower())
    return " ".join(_ASCII_PUNCTUATION.sub(" ", text).split())
  text = _NUMBERS.sub("0", text.lower())
  text = _PUNCTUATION.sub(" ", text)
  text = _MARKS.sub("", unicodedata.normalize("NFD", text))
  return " ".join(text.split())


def exact_key_text(text: str) -> str:
  """The text form exact dedup hashes: lower case, whitespace collapsed."""
  return _WHITESPACE.sub(" ", text.lower()).strip()
