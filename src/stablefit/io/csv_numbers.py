"""A compiled parser for the common CSV chunk: plain decimal numbers, nothing else.

Most numeric CSV files hold only cells such as ``-12.8534662944``, ``3e-05`` or ``42``. This
parser reads such a chunk in one pass, straight into the row-major float64 arrays the
Summary consumes, without the GIL, about four times as fast per core as pyarrow's
general parser. It gives up (and the chunk goes to pyarrow, which then decides what the
cells mean or which error to report) at the first thing it does not handle: quotes
anywhere in skipped columns, a blank line, a wrong number of fields, null markers such as
``NA``, ``inf`` or ``nan``, spaces, or any other text.

Every value it does return is the correctly rounded double, exactly as pyarrow's parser
gives it: a decimal ``w · 10^e`` with an integer ``w ≤ 2^53`` and ``|e| ≤ 22`` is one
IEEE multiplication or division of two exactly representable doubles (Clinger's fast
path, 1990). Numbers outside that range — more than 19 digits, ``w > 2^53``, large
exponents — also make the chunk go to pyarrow. An empty cell is a missing value (NaN), as
in pyarrow.
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from stablefit.io.schema import Batch

# Exact powers of ten: 10^22 is the largest that a double holds exactly.
POWERS_OF_TEN = np.array([10.0**k for k in range(23)])
LARGEST_EXACT_MANTISSA = np.uint64(1 << 53)  # uint64: a comparison with int64 goes through float
NEWLINE, CARRIAGE_RETURN, QUOTE = 10, 13, 34
MINUS, PLUS, POINT, ZERO, NINE, LOWER_E, UPPER_E = 45, 43, 46, 48, 57, 101, 69
# A field destination: features are 0..d-1, the target is TARGET, the rest are skipped.
SKIP, TARGET = -1, -2
GIVE_UP = -1
# Bytes of a chunk's start whose lines are counted to size its arrays, and the room kept
# beyond that estimate.
SAMPLE_BYTES = 1 << 16
ROOM = 1.0625


# Eight bytes as one word, the first in the lowest byte.
ZEROS = np.uint64(0x3030303030303030)
LOW_SEVEN_BITS = np.uint64(0x7F7F7F7F7F7F7F7F)
BELOW_TEN = np.uint64(0x7676767676767676)  # 0x80 - 10 in each byte
HIGH_BITS = np.uint64(0x8080808080808080)


@intrinsic
def _trailing_zeros(typingctx, word):  # pragma: no cover
    """Trailing zero bits of a uint64 (64 for 0): LLVM's cttz, one instruction."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]), "llvm.cttz.i64"
        )
        return builder.call(function, [args[0], ir.Constant(ir.IntType(1), 0)])

    return signature, codegen


@njit(inline="always")
def _digit_run(data, pos):  # pragma: no cover
    """(k, value): how many of the 8 bytes at ``pos`` are digits before the first one that
    is not (8 if all are), and the number those k digits spell.

    Without a loop, so without the mispredicted exit that a run of 1 to 3 digits costs.
    Bytes are tested one by one inside the word (no carry crosses a byte), and the digits
    are converted eight at a time with three multiplications (as in simdjson).
    """
    at = np.uint64(pos)
    word = np.uint64(0)
    for i in range(8):  # LLVM merges the eight loads into one
        word |= np.uint64(data[at + np.uint64(i)]) << np.uint64(8 * i)
    digits = word ^ ZEROS  # 0-9 in the digit bytes
    not_digit = (((digits & LOW_SEVEN_BITS) + BELOW_TEN) | digits) & HIGH_BITS
    k = _trailing_zeros(not_digit) >> np.uint64(3)
    # Shift the k digits to the top (the bytes below become leading zeros), in two steps
    # so that k = 0 shifts all out instead of by 64 bits, which LLVM leaves undefined.
    half = np.uint64(32) - (k << np.uint64(2))
    value = (digits << half) << half
    value = value * np.uint64(10) + (value >> np.uint64(8))
    value = (
        (value & np.uint64(0x000000FF000000FF)) * np.uint64(100 + (1000000 << 32))
        + ((value >> np.uint64(16)) & np.uint64(0x000000FF000000FF)) * np.uint64(1 + (10000 << 32))
    ) >> np.uint64(32)
    return np.int64(k), value


# Every index in the parser is cast to unsigned: numba then leaves out the wraparound of
# negative indices it adds to each signed access (a comparison and a conditional move),
# which took a fifth of the parser's time.
@njit(inline="always")
def _byte(data, pos):  # pragma: no cover
    return data[np.uint64(pos)]


@njit(cache=True, nogil=True, boundscheck=False)
def _parse(data, pos, row, skip_header, destinations, delimiter, X, y):  # pragma: no cover
    """The lines from byte ``pos`` on, parsed into X and y from ``row`` on.

    Returns (rows filled, where it stopped): at the end of ``data``, or at the start of a
    line when X is full. Rows filled is GIVE_UP when a line is not plain numbers.
    ``data`` must end with a line break: that sentinel ends every inner loop, so they test
    bytes, not positions.
    """
    end = data.shape[0]
    if skip_header:
        while _byte(data, pos) != NEWLINE:
            pos += 1
        pos += 1
    n_fields = destinations.shape[0]
    c = NEWLINE
    while pos < end:
        if row >= X.shape[0]:
            return row, pos
        for field in range(n_fields):
            destination = destinations[np.uint64(field)]
            c = _byte(data, pos)
            if destination == SKIP:
                while c != delimiter and c != NEWLINE and c != CARRIAGE_RETURN:
                    if c == QUOTE:
                        return GIVE_UP, pos
                    pos += 1
                    c = _byte(data, pos)
            else:
                cell_start = pos
                negative = c == MINUS
                # Without a branch: a random sign would be mispredicted half the time.
                pos += negative | (c == PLUS)
                c = _byte(data, pos)
                start = pos
                mantissa = np.uint64(0)
                if pos + 8 <= end:  # the integer part: its length varies most
                    k, mantissa = _digit_run(data, pos)
                    pos += k
                    c = _byte(data, pos)
                while ZERO <= c <= NINE:
                    mantissa = mantissa * np.uint64(10) + np.uint64(c - ZERO)
                    pos += 1
                    c = _byte(data, pos)
                digits = pos - start
                exponent = 0
                if c == POINT:
                    pos += 1
                    c = _byte(data, pos)
                    fraction = pos
                    while ZERO <= c <= NINE:
                        mantissa = mantissa * np.uint64(10) + np.uint64(c - ZERO)
                        pos += 1
                        c = _byte(data, pos)
                    exponent = fraction - pos
                    digits += pos - fraction
                if c in (LOWER_E, UPPER_E) and digits:
                    pos += 1
                    c = _byte(data, pos)
                    negative_exponent = c == MINUS
                    if negative_exponent or c == PLUS:
                        pos += 1
                        c = _byte(data, pos)
                    written = 0
                    power = 0
                    while ZERO <= c <= NINE:
                        if power < 100000:
                            power = power * 10 + (c - ZERO)
                        written += 1
                        pos += 1
                        c = _byte(data, pos)
                    if not written:
                        return GIVE_UP, pos
                    exponent += -power if negative_exponent else power
                if digits == 0:
                    # Only a truly empty cell is a missing value.
                    if pos != cell_start or (
                        c != delimiter and c != NEWLINE and c != CARRIAGE_RETURN
                    ):
                        return GIVE_UP, pos
                    value = np.nan
                else:
                    # 19 digits cannot overflow the 64-bit mantissa.
                    if digits > 19 or mantissa > LARGEST_EXACT_MANTISSA:
                        return GIVE_UP, pos
                    if mantissa == 0:
                        value = 0.0
                    elif 0 <= exponent <= 22:
                        value = float(mantissa) * POWERS_OF_TEN[np.uint64(exponent)]
                    elif -22 <= exponent < 0:
                        value = float(mantissa) / POWERS_OF_TEN[np.uint64(-exponent)]
                    else:
                        return GIVE_UP, pos
                    value = -value if negative else value
                if destination == TARGET:
                    y[np.uint64(row)] = value
                else:
                    X[np.uint64(row), np.uint64(destination)] = value
            if field < n_fields - 1:
                if c != delimiter:
                    return GIVE_UP, pos
                pos += 1
        if c == CARRIAGE_RETURN:
            pos += 1
            c = _byte(data, pos)
        if c != NEWLINE:
            return GIVE_UP, pos
        pos += 1
        row += 1
    return row, pos


@njit(cache=True, nogil=True)
def _count_line_breaks(data):  # pragma: no cover
    count = 0
    for byte in data:
        count += byte == NEWLINE
    return count


def parse_plain_numbers(
    data: memoryview,
    *,
    has_header: bool,
    destinations: np.ndarray,
    n_features: int,
    has_target: bool,
    delimiter: str,
) -> Batch | None:
    """A chunk of whole lines as a Batch (``first_row`` 0), or None when pyarrow must read it.

    ``destinations[i]`` says where field i of each line goes: a feature's column, TARGET,
    or SKIP.
    """
    text = np.frombuffer(data, dtype=np.uint8)
    if text.size == 0 or text[-1] != NEWLINE:
        return None
    # Room for the lines the chunk's start promises, and some: counting them all would be
    # one more pass over the chunk. Lines shorter than those of the start are counted
    # when the room runs out.
    sample = text[:SAMPLE_BYTES]
    capacity = int(_count_line_breaks(sample) * (text.size / sample.size) * ROOM) + 1
    X = np.empty((capacity, n_features))
    y = np.empty(capacity if has_target else 0)
    code = ord(delimiter)
    rows, stop = _parse(text, 0, 0, has_header, destinations, code, X, y)
    while rows != GIVE_UP and stop < text.size:
        capacity = rows + _count_line_breaks(text[stop:])
        X = np.concatenate([X[:rows], np.empty((capacity - rows, n_features))])
        y = np.concatenate([y[:rows], np.empty(capacity - rows)]) if has_target else y
        rows, stop = _parse(text, stop, rows, False, destinations, code, X, y)
    if rows == GIVE_UP:
        return None
    return Batch(X[:rows], y[:rows] if has_target else None, 0)
