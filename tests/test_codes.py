"""Identity codes: the MOD 37-2 check character and COI / batch number parsing."""

import pytest

from lab.templating import codes
from workflows.codes import (
    PRINTED_CODE,
    CheckCharacterError,
    Code,
    CodeError,
    CodeKind,
    make_code,
    mod37_2,
    parse_code,
)

pytestmark = pytest.mark.requirements("COI-1", "P11-10h")


@pytest.mark.parametrize(
    ("data", "check"),
    [
        ("G123498654321", "H"),  # UK Red Book Annex 2 worked example (DOMAIN.md §3.3)
        ("A999921123456", "3"),  # ISBT 128 ST-001 Fig. 2 DIN (DOMAIN.md §3.3)
    ],
)
def test_mod37_2_worked_examples(data, check):
    assert mod37_2(data) == check


def test_mod37_2_refuses_a_character_outside_its_alphabet():
    with pytest.raises(CodeError, match="'-' cannot appear in a code"):
        mod37_2("A9999-21")


def test_make_code_coi_and_batch_number():
    coi = make_code(CodeKind.COI, "A9999", 2026, 1)
    assert str(coi) == "CH-A9999-26-000001-*"
    assert coi.check == mod37_2("CHA999926000001")
    assert str(make_code(CodeKind.BATCH, "A9999", 26, 1)) == "B-A9999-26-00001-5"


@pytest.mark.parametrize("kind", list(CodeKind))
@pytest.mark.parametrize("sequence", [1, 2, 37, 999, 12345])
def test_make_then_parse_round_trip(kind, sequence):
    code = make_code(kind, "A9997", 2026, sequence)
    assert parse_code(str(code), kind) == code
    assert str(parse_code(str(code), kind)) == str(code)


def test_alphanumeric_coi_serial_parses():
    text = f"CH-A9999-26-ABC123-{mod37_2('CHA999926ABC123')}"
    code = parse_code(text, CodeKind.COI)
    assert code == Code(CodeKind.COI, "A9999", 26, "ABC123", "G")
    assert str(code) == "CH-A9999-26-ABC123-G"


@pytest.mark.parametrize(
    "typed",
    [
        "ch-a9999-26-000002-y",
        "CHA999926000002Y",
        "cha999926000002y",
        "  CH A9999 26 000002 Y  ",
        "CH-A9999-26000002-Y",
    ],
)
def test_lower_case_spaces_and_missing_hyphens_are_accepted(typed):
    assert str(parse_code(typed, CodeKind.COI)) == "CH-A9999-26-000002-Y"


def test_wrong_check_character_is_a_check_character_error():
    with pytest.raises(CheckCharacterError, match="check character does not match") as info:
        parse_code("CH-A9999-26-000002-Z", CodeKind.COI)
    assert "Scan it again or retype it" in str(info.value)


def test_every_single_substitution_is_caught():
    """MOD 37-2 catches any one mistyped character: none of them yields another valid code."""
    good = str(make_code(CodeKind.COI, "A9999", 2026, 42))
    for position, char in enumerate(good):
        if char == "-":
            continue
        for replacement in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*":
            if replacement == char:
                continue
            typo = good[:position] + replacement + good[position + 1 :]
            with pytest.raises(CodeError):
                parse_code(typo, CodeKind.COI)


def test_adjacent_transposition_is_caught():
    good = str(make_code(CodeKind.COI, "A9999", 2026, 123456)).replace("-", "")
    for i in range(len(good) - 1):
        if good[i] != good[i + 1]:
            swapped = good[:i] + good[i + 1] + good[i] + good[i + 2 :]
            with pytest.raises(CodeError):
                parse_code(swapped, CodeKind.COI)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("hello", "'hello' is not a COI (expected the form CH-A9999-26-000001-*)"),
        ("CH-A9999-26-00001-*", "is not a COI"),  # serial one character short
        ("CH-O9999-26-000001-*", "is not a COI"),  # O is not allowed in a FIN
        ("B-A9999-26-00001-5", "is not a COI"),  # a batch number, not a COI
        ("CH-A9999-26-000001-*-X", "is not a COI"),
        ("", "Enter a COI."),
        ("  -  ", "Enter a COI."),
        ("CH" + "A" * 100, "too long or holds unprintable characters"),
        ("CH-A9999\x00-26-000001-*", "too long or holds unprintable characters"),
        ("CH-A9999-26-000001-*\x1b[2J", "too long or holds unprintable characters"),
        (b"\xff\xfe\x00CH".decode("latin-1"), "too long or holds unprintable characters"),
    ],
)
def test_malformed_codes_are_refused(typed, message):
    with pytest.raises(CodeError) as info:
        parse_code(typed, CodeKind.COI)
    assert message in str(info.value)
    assert not isinstance(info.value, CheckCharacterError)


def test_batch_number_is_not_a_coi_and_vice_versa():
    with pytest.raises(CodeError, match="is not a batch number"):
        parse_code("CH-A9999-26-000001-*", CodeKind.BATCH)
    assert str(parse_code("b-a9999-26-00001-5", CodeKind.BATCH)) == "B-A9999-26-00001-5"


@pytest.mark.parametrize(
    ("fin", "sequence", "message"),
    [
        ("O9999", 1, "not a facility identifier"),
        ("A99", 1, "not a facility identifier"),
        ("A9999", 0, "out of range"),
        ("A9999", 1_000_000, "out of range"),
    ],
)
def test_make_code_refuses_bad_input(fin, sequence, message):
    with pytest.raises(CodeError, match=message):
        make_code(CodeKind.COI, fin, 2026, sequence)


def test_codes_printed_inside_a_sentence_are_found_and_nothing_else() -> None:
    text = ("Moved E-A9999-26-00001-Y → E-A9999-26-00003-U: bag C-A9999-26-000010-G of CH-A9999-26-000001-*, "
            "lot L-A9999-26-000001-7 for B-A9999-26-00006-W; not XE-A9999-26-00001-Y, E-A9999-26-00001-YZ, "
            "B-A9999-26-0001-5 or E-A9999-26-00001-Y-2")
    assert PRINTED_CODE.findall(text) == ["E-A9999-26-00001-Y", "E-A9999-26-00003-U", "C-A9999-26-000010-G",
                                          "CH-A9999-26-000001-*", "L-A9999-26-000001-7", "B-A9999-26-00006-W"]


def test_the_codes_filter_escapes_the_text_and_keeps_each_code_on_one_line() -> None:
    marked = codes('<b>"E-A9999-26-00001-Y"</b> → E-A9999-26-00003-U')
    assert str(marked) == ('&lt;b&gt;&#34;<span class="code">E-A9999-26-00001-Y</span>&#34;&lt;/b&gt; → '
                           '<span class="code">E-A9999-26-00003-U</span>')
    assert str(codes(None)) == ""
