"""ISO reference data the core validates against: currencies (ISO 4217) and countries (ISO 3166-1).

Kept as literal tables rather than a dependency: the core does no I/O (a package such as
pycountry reads JSON files when first used), and these lists change a few times a decade.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

# ISO 4217 active codes -> minor-unit exponent (number of decimals). Amounts in APOS are
# always in minor units, so the exponent is what turns 1999 into 19.99 for people.
CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2,
    "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2,
    "BOB": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2,
    "CHF": 2, "CLP": 0, "CNY": 2, "COP": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DJF": 0,
    "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2,
    "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0, "GTQ": 2, "GYD": 2, "HKD": 2,
    "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0,
    "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0,
    "KWD": 3, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3,
    "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2,
    "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2,
    "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2,
    "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2,
    "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2, "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2,
    "TTD": 2, "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0, "USD": 2, "UYU": 2, "UZS": 2, "VES": 2,
    "VND": 0, "VUV": 0, "WST": 2, "XAF": 0, "XCD": 2, "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2,
    "ZMW": 2, "ZWL": 2,
}  # fmt: skip

CURRENCIES: Final[frozenset[str]] = frozenset(CURRENCY_EXPONENTS)

# ISO 3166-1 alpha-2 officially assigned codes.
COUNTRIES: Final[frozenset[str]] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    """.split()  # noqa: SIM905 - a block of codes reads better than 249 quoted items
)


CARD_MIN_DIGITS: Final = 12


def looks_like_card_number(text: str) -> bool:
    """True if ``text`` is 12-19 digits (spaces and dashes allowed) that pass the Luhn check.

    12 to 19 digits is the length of every payment card number in use (ISO/IEC 7812; the
    shortest are 12-digit Maestro cards). Used to refuse raw card numbers wherever APOS
    expects a hashed fingerprint, and by the log masker. Luhn: double every second digit
    from the right, sum the digits, mod 10 == 0.
    """
    compact = text.replace(" ", "").replace("-", "")
    # str methods first: this runs on every ingested fingerprint, nearly all not digits.
    if not CARD_MIN_DIGITS <= len(compact) <= 19 or not compact.isdecimal():
        return False
    if not compact.isascii():  # the same number in another script's digits (int() reads them)
        compact = "".join(str(unicodedata.decimal(c)) for c in compact)
    total = 0
    for i, c in enumerate(reversed(compact)):
        d = ord(c) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Bounded by non-digits only: "card_4111111111111111" or "pan4111..." is still a card number
# (masking a digit run inside an identifier errs on the safe side).
_DIGITS = re.compile(r"\d+")
_CARD_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){11,}\d(?!\d)")
_DIGIT_BYTES = b"0123456789"
# Every byte but digits, spaces and dashes -> "x": what is left between two "x" may be a card.
_RUN_BYTES = bytes(c if chr(c) in "0123456789 -" else ord("x") for c in range(256))


def redact_card_numbers(text: str) -> str:
    """Replace every Luhn-valid card number in ``text`` by ``[card ****1234]``.

    Applied to everything APOS keeps verbatim (dead letters) and to every log line: card
    numbers must never be stored or logged (PCI DSS 3.4).

    >>> redact_card_numbers('{"fingerprint": "4242 4242 4242 4242", "amount": 1999}')
    '{"fingerprint": "[card ****4242]", "amount": 1999}'
    """

    return _CARD_CANDIDATE.sub(lambda match: _mask_run(match.group(0)), text)


def contains_card_number(text: str) -> bool:
    """True if a card number (see :func:`looks_like_card_number`) appears anywhere in ``text``.

    Refuses card numbers in identifiers and codes: it runs for every such field of every
    ingested event, so text with fewer than 12 digits (nearly all of them) is answered by
    counting its digits, without a regular expression.

    >>> contains_card_number("pay_4111-1111-1111-1111"), contains_card_number("pay_1234")
    (True, False)
    """
    if len(text) < CARD_MIN_DIGITS:
        return False
    if text.isascii():
        data = text.encode()
        if len(data) - len(data.translate(None, _DIGIT_BYTES)) < CARD_MIN_DIGITS:
            return False
        # Digits enough, but split by letters ("dec_1a2b3c4d_..."): still no regex.
        if max(map(len, data.translate(_RUN_BYTES).split(b"x"))) < CARD_MIN_DIGITS:
            return False
    return any(_formatted_card_in_run(m.group(0)) for m in _CARD_CANDIDATE.finditer(text))


# How card numbers are written when they are split: groups of four (the last may be
# shorter: 4-4-4-4, 4-4-4-4-3, 4-4-4-2), or Amex's 4-6-5 and Diners' 4-6-4; at least 14
# digits (a split 4-4-4 is a UUID's middle far more often than a 12-digit Maestro card).
_SPLIT_LAYOUTS = frozenset({(4, 6, 5), (4, 6, 4)})


def _card_layout(lengths: tuple[int, ...]) -> bool:
    if len(lengths) == 1:
        return CARD_MIN_DIGITS <= lengths[0] <= 19
    if lengths in _SPLIT_LAYOUTS:
        return True
    total = sum(lengths)
    return 14 <= total <= 19 and all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _formatted_card_in_run(run: str) -> bool:
    """Whether a run of digit groups holds a card number written as cards are: one unbroken
    run of 12-19 digits, or groups in a card layout (:data:`_SPLIT_LAYOUTS`), Luhn-valid.

    Stricter than masking (:func:`_card_in_run`) on purpose: refusing an id must not catch
    dates and references split differently ("order-2026-11-05-123456" passes Luhn one time
    in ten), while masking a log line errs on the safe side.
    """
    groups = [(m.start(), m.end()) for m in _DIGITS.finditer(run)]
    for first in range(len(groups)):
        for last in range(first, min(first + 5, len(groups))):
            lengths = tuple(end - start for start, end in groups[first : last + 1])
            if sum(lengths) > 19:
                break
            if _card_layout(lengths) and looks_like_card_number(
                run[groups[first][0] : groups[last][1]]
            ):
                return True
    return False


def card_number_path(document: object, path: str = "") -> str | None:
    """The dotted path of the first card number in a JSON-like document, else ``None``.

    Keys count as much as values: a card number used as a key is still stored. A key that
    holds a card number is reported masked, so the path can be shown to the sender.

    >>> card_number_path({"rules": [{"name": "r1", "connectors": ["4111 1111 1111 1111"]}]})
    'rules.0.connectors.0'
    """
    if isinstance(document, str):
        return path if contains_card_number(document) else None
    if isinstance(document, dict):
        for key, value in document.items():
            name = str(key)
            here = f"{path}.{redact_card_numbers(name)}" if path else redact_card_numbers(name)
            if contains_card_number(name):
                return here
            found = card_number_path(value, here)
            if found is not None:
                return found
    elif isinstance(document, list | tuple):
        for index, value in enumerate(document):
            found = card_number_path(value, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def _card_in_run(run: str) -> tuple[int, int] | None:
    """Where the first card number is in one run of digit groups (``"12 4111 1111 1111
    1111"``): ``(start, end)``, or ``None``.

    The candidate pattern is greedy: a card next to other numbers ("code 12 4111...", a date)
    makes one run that fails Luhn as a whole, so the windows of 12-19 digits between group
    boundaries are tried too, leftmost first, then longest.
    """
    core = run.strip(" -")  # a remainder keeps the separator before it
    if core and looks_like_card_number(core):
        lead = run.index(core[0])
        return lead, lead + len(core)
    groups = [(m.start(), m.end()) for m in _DIGITS.finditer(run)]
    for first, (start, _) in enumerate(groups):
        count, best = 0, None
        for last in range(first, len(groups)):  # windows of at most 19 digits: linear
            count += groups[last][1] - groups[last][0]
            if count > 19:
                break
            if count >= CARD_MIN_DIGITS and looks_like_card_number(run[start : groups[last][1]]):
                best = groups[last][1]
        if best is not None:
            return start, best
    return None


def _mask_run(run: str) -> str:
    """Mask the card numbers in one run of digit groups (see :func:`_card_in_run`)."""
    span = _card_in_run(run)
    if span is None:
        return run
    start, end = span
    digits = [c for c in run[start:end] if c.isdigit()]
    return f"{run[:start]}[card ****{''.join(digits[-4:])}]{_mask_run(run[end:])}"
