"""Identity codes printed and scanned in the lab: COIs and batch numbers.

Each code ends in an ISO/IEC 7064 MOD 37-2 check character (the one ISBT 128 prints
boxed after a DIN), so a mistyped or misread code is refused instead of matching
another patient's record. Codes use only the QR alphanumeric set (A-Z, 0-9, ``-``);
the check character may be ``*``, which that set also holds.

Canonical forms (FIN = the facility identifier, yy = two-digit year):

* COI (chain of identity, after ISBT 128 DS040): ``CH-<FIN>-<yy>-<6 alphanumerics>-<K>``
* Batch number: ``B-<FIN>-<yy>-<5 digits>-<K>``
* Container code (a bag, tube or sample): ``C-<FIN>-<yy>-<6 digits>-<K>``
* Equipment code (an instrument, cabinet, freezer): ``E-<FIN>-<yy>-<5 digits>-<K>``
* Material lot code (a received lot of a reagent or consumable): ``L-<FIN>-<yy>-<6 digits>-<K>``

The shapes differ in length or content, so a code says what it is (``identify``).

The check character is computed over the code without separators (``CHA999926000001``).
Parsing accepts the code with or without hyphens and spaces, in any case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
# ISBT 128 FIN: first character A-N, P-Z or 1-9; then two of A-N, P-Z, 0-9; then two digits.
FIN_PATTERN = r"[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}"
MAX_CODE_LENGTH = 64


class CodeError(ValueError):
    """A typed or scanned code is malformed or fails its check character."""


class CheckCharacterError(CodeError):
    """The code is well formed but its check character does not match its content."""


def mod37_2(data: str) -> str:
    """Return the ISO/IEC 7064 MOD 37-2 check character for ``data``.

    ``data`` holds characters of ``0-9A-Z*`` only; the worked example of the UK Red
    Book is ``mod37_2("G123498654321") == "H"``.
    """
    total = 0
    for char in data:
        value = ALPHABET.find(char)
        if value < 0:
            raise CodeError(f"{char!r} cannot appear in a code (only 0-9, A-Z and *).")
        total = (total + value) * 2
    return ALPHABET[(38 - total % 37) % 37]


def is_valid_fin(fin: str) -> bool:
    """True when ``fin`` has the shape of an ISBT 128 facility identification number."""
    return re.fullmatch(FIN_PATTERN, fin) is not None


class CodeKind(Enum):
    COI = "COI"
    BATCH = "batch number"
    CONTAINER = "container code"
    EQUIPMENT = "equipment code"
    LOT = "material lot code"


@dataclass(frozen=True)
class CodeFormat:
    kind: CodeKind
    prefix: str
    serial_digits: int
    serial_alphanumeric: bool
    example: str

    @property
    def pattern(self) -> re.Pattern[str]:
        serial = "[A-Z0-9]" if self.serial_alphanumeric else "[0-9]"
        return re.compile(
            rf"{self.prefix}-?(?P<fin>{FIN_PATTERN})-?(?P<year>[0-9]{{2}})-?"
            rf"(?P<serial>{serial}{{{self.serial_digits}}})-?(?P<check>[0-9A-Z*])"
        )


FORMATS: dict[CodeKind, CodeFormat] = {
    CodeKind.COI: CodeFormat(CodeKind.COI, "CH", 6, True, "CH-A9999-26-000001-*"),
    CodeKind.BATCH: CodeFormat(CodeKind.BATCH, "B", 5, False, "B-A9999-26-00001-5"),
    CodeKind.CONTAINER: CodeFormat(CodeKind.CONTAINER, "C", 6, False, "C-A9999-26-000001-I"),
    CodeKind.EQUIPMENT: CodeFormat(CodeKind.EQUIPMENT, "E", 5, False, "E-A9999-26-00001-Y"),
    CodeKind.LOT: CodeFormat(CodeKind.LOT, "L", 6, False, "L-A9999-26-000001-7"),
}


#: Any of the codes as printed, hyphens included: to find the codes inside a sentence.
PRINTED_CODE = re.compile("(?<![A-Za-z0-9-])(?:" + "|".join(
    rf"{f.prefix}-{FIN_PATTERN}-[0-9]{{2}}-{'[A-Z0-9]' if f.serial_alphanumeric else '[0-9]'}{{{f.serial_digits}}}-[0-9A-Z*]"
    for f in FORMATS.values()) + ")(?!-?[A-Za-z0-9])")


@dataclass(frozen=True)
class Code:
    """A parsed code whose check character has been verified."""

    kind: CodeKind
    fin: str
    year: int
    serial: str
    check: str

    @property
    def data(self) -> str:
        """The characters the check character covers."""
        return f"{FORMATS[self.kind].prefix}{self.fin}{self.year:02d}{self.serial}"

    def __str__(self) -> str:
        return f"{FORMATS[self.kind].prefix}-{self.fin}-{self.year:02d}-{self.serial}-{self.check}"


def make_code(kind: CodeKind, fin: str, year: int, sequence: int) -> Code:
    """Build the code number ``sequence`` of ``year`` for facility ``fin``."""
    fmt = FORMATS[kind]
    if not is_valid_fin(fin):
        raise CodeError(f"{fin!r} is not a facility identifier (five characters such as A9999).")
    serial = f"{sequence:0{fmt.serial_digits}d}"
    if sequence < 1 or len(serial) > fmt.serial_digits:
        raise CodeError(f"{fmt.kind.value} sequence {sequence} is out of range for one year.")
    data = f"{fmt.prefix}{fin}{year % 100:02d}{serial}"
    return Code(kind, fin, year % 100, serial, mod37_2(data))


def normalize(text: str) -> str:
    """Upper-case ``text`` and drop the spaces and hyphens people and scanners add."""
    return re.sub(r"[\s-]", "", text).upper()


def parse_code(text: str, kind: CodeKind) -> Code:
    """Parse a typed or scanned code of ``kind`` and verify its check character.

    Raises CodeError with a message for the person at the bench when the text is not
    such a code, and CheckCharacterError when only the check character is wrong.
    """
    fmt = FORMATS[kind]
    if len(text) > MAX_CODE_LENGTH or not text.isprintable():
        raise CodeError(f"That is not a {kind.value}: it is too long or holds unprintable characters.")
    compact = normalize(text)
    if not compact:
        raise CodeError(f"Enter a {kind.value}.")
    match = fmt.pattern.fullmatch(compact)
    if match is None:
        raise CodeError(f"{text.strip()!r} is not a {kind.value} (expected the form {fmt.example}).")
    code = Code(kind, match["fin"], int(match["year"]), match["serial"], match["check"])
    if mod37_2(code.data) != code.check:
        raise CheckCharacterError(
            f"{text.strip()!r}: the check character does not match the rest of the {kind.value}, "
            "so it was mistyped or misread. Scan it again or retype it."
        )
    return code


def identify(text: str) -> Code:
    """Parse a scanned or typed code of any kind, verifying its check character.

    Raises CheckCharacterError when the text has the shape of a code whose check character
    is wrong, and CodeError when it is no CellTrail code at all.
    """
    if len(text) > MAX_CODE_LENGTH or not text.isprintable():
        raise CodeError("That is not a CellTrail code: it is too long or holds unprintable characters.")
    compact = normalize(text)
    for kind, fmt in FORMATS.items():
        if fmt.pattern.fullmatch(compact):
            return parse_code(text, kind)
    raise CodeError(
        f"{text.strip()!r} is not a CellTrail code (a batch number such as {FORMATS[CodeKind.BATCH].example}, "
        f"a container code such as {FORMATS[CodeKind.CONTAINER].example} or a COI such as "
        f"{FORMATS[CodeKind.COI].example})."
    )
