"""A compiled parser for the common CSV chunk: plain decimal numbers, line after line.

Most numeric CSV files hold only cells such as ``-12.8534662944``, ``3e-05``, ``42`` or,
written by ``pandas.to_csv``, ``numpy.savetxt`` or ``repr``, full-precision numbers such
as ``-0.12345678901234568``. This parser reads such lines in one pass, straight into the
row-major float64 arrays the Summary consumes, without the GIL. A line it does not read
as plain numbers — quotes, a null marker such as ``NA``, ``inf`` or ``nan``, spaces, a
wrong number of fields, any other text — it leaves to pyarrow, line by line: the caller
reads those lines (:attr:`PlainNumbers.odd_lines`) with pyarrow, which then decides what
their cells mean or which error to report. Only a chunk without a final line break, or
whose lines are mostly of that kind, goes to pyarrow whole.

Every value it returns is the correctly rounded double, the value Python's ``float()``
and pyarrow give. A decimal ``w · 10^q`` with ``w ≤ 2^53`` and ``|q| ≤ 22`` is one IEEE
multiplication or division of two exact doubles (Clinger's fast path, 1990); any other
``w`` of up to 19 significant digits (so below 2^64), with any exponent, takes Eisel and
Lemire's algorithm: one 64 × 128-bit product with a truncated power of five, which
Mushtak and Lemire (2023, "Fast number parsing without fallback") proved always
sufficient for such ``w`` (Lemire, "Number parsing at a gigabyte per second", 2021; the
algorithm and table of fast_float). A number of more than 19 significant digits is
truncated to 19: if ``w · 10^q`` and ``(w + 1) · 10^q`` round to the same double, the
number lies between them and rounds to it too; otherwise (a number within a hair of
halfway between two doubles) its line goes to pyarrow, whose parser compares all the
digits exactly. An empty cell is a missing value (NaN), as in pyarrow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stablefit.io.schema import Batch
from stablefit.jit import intrinsic, kernel

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
# Significant digits that a 64-bit mantissa always holds (10^19 < 2^64).
MAX_DIGITS = 19


# Eight bytes as one word, the first in the lowest byte.
ZEROS = np.uint64(0x3030303030303030)
LOW_SEVEN_BITS = np.uint64(0x7F7F7F7F7F7F7F7F)
BELOW_TEN = np.uint64(0x7676767676767676)  # 0x80 - 10 in each byte
HIGH_BITS = np.uint64(0x8080808080808080)
# 10^k for the k digits of a word.
WORD_SCALES = np.array([10**k for k in range(9)], dtype=np.uint64)


def powers_of_five() -> np.ndarray:
    """5^q for q = -342..308 as 128 bits (high word, low word), normalized so that the top
    bit is set: truncated for q ≥ 0, rounded up from below for q < 0 (fast_float's table).
    """
    words = []
    for q in range(SMALLEST_POWER, LARGEST_POWER + 1):
        if q >= 0:
            power = 5**q
            bits = power.bit_length()
            power = power << (128 - bits) if bits <= 128 else power >> (bits - 128)
        else:
            power = 5**-q
            z = (power - 1).bit_length()  # the least z with 2^z ≥ 5^-q
            if q >= -27:
                power = (1 << (z + 127)) // power + 1
            else:
                power = (1 << (2 * z + 128)) // power + 1
                power >>= max(power.bit_length() - 128, 0)
        words += [power >> 64, power & (2**64 - 1)]
    return np.array(words, dtype=np.uint64)


# w · 10^q with w < 2^64 and q below -342 rounds to zero, above 308 to infinity.
SMALLEST_POWER, LARGEST_POWER = -342, 308
POWERS_OF_FIVE = powers_of_five()
MANTISSA_BITS = 52
# The 64-bit head of the product decides the rounding unless its low 9 bits are all ones
# (64 - 52 - 3 bits of precision beyond the mantissa).
PRECISION_MASK = np.uint64(0x1FF)
INFINITE_POWER = 0x7FF


def _count_zero_bits(instruction: str) -> Callable:
    """An intrinsic's definition: LLVM's cttz or ctlz of a uint64 (64 for 0)."""

    def definition(typingctx, word):  # pragma: no cover
        from llvmlite import ir
        from numba import types
        from numba.core import cgutils

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]), instruction
            )
            return builder.call(function, [args[0], ir.Constant(ir.IntType(1), 0)])

        return types.uint64(types.uint64), codegen

    definition.__name__ = instruction.replace(".", "_")
    return definition


def _python_trailing_zeros(word: np.uint64) -> np.uint64:
    word = int(word)
    return np.uint64((word & -word).bit_length() - 1 if word else 64)


def _python_leading_zeros(word: np.uint64) -> np.uint64:
    return np.uint64(64 - int(word).bit_length())


# Trailing and leading zero bits of a uint64 (64 for 0): one instruction each.
_trailing_zeros = intrinsic(_python_trailing_zeros)(_count_zero_bits("llvm.cttz.i64"))
_leading_zeros = intrinsic(_python_leading_zeros)(_count_zero_bits("llvm.ctlz.i64"))


def _python_high_product(a: np.uint64, b: np.uint64) -> np.uint64:
    return np.uint64((int(a) * int(b)) >> 64)


@intrinsic(_python_high_product)
def _high_product(typingctx, a, b):  # pragma: no cover
    """The high 64 bits of the 128-bit product of two uint64 (one multiplication)."""
    from llvmlite import ir
    from numba import types

    def codegen(context, builder, signature, args):
        i128 = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        return builder.trunc(builder.lshr(product, ir.Constant(i128, 64)), ir.IntType(64))

    return types.uint64(types.uint64, types.uint64), codegen


def _python_as_double(bits: np.uint64) -> np.float64:
    return np.array(bits, dtype=np.uint64).view(np.float64)[()]


@intrinsic(_python_as_double)
def _as_double(typingctx, bits):  # pragma: no cover
    """The double whose IEEE bits are ``bits``."""
    from llvmlite import ir
    from numba import types

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@kernel(inline="never")
def _eisel_lemire(w, q):  # pragma: no cover
    """The double nearest to w · 10^q (ties to even), for 0 < w < 2^64 (fast_float's
    ``compute_float``)."""
    if q < SMALLEST_POWER:
        return 0.0
    if q > LARGEST_POWER:
        return np.inf
    shift_in = _leading_zeros(w)
    w = w << shift_in
    index = np.uint64(2 * (q - SMALLEST_POWER))
    factor = POWERS_OF_FIVE[index]
    high = _high_product(w, factor)
    low = w * factor
    if (high & PRECISION_MASK) == PRECISION_MASK:
        # The low word of the power of five can carry into the bits that decide.
        second = POWERS_OF_FIVE[index + np.uint64(1)]
        carry = _high_product(w, second)
        low += carry
        if carry > low:
            high += np.uint64(1)
    upper = high >> np.uint64(63)
    shift = upper + np.uint64(64 - MANTISSA_BITS - 3)
    mantissa = high >> shift
    # floor(q · log2(10)) + 63, exactly for |q| < 1700, in the binary exponent's bias.
    power = ((217706 * q) >> 16) + 63 + np.int64(upper) - np.int64(shift_in) + 1023
    if power <= 0:  # subnormal, or zero
        if 1 - power >= 64:
            return 0.0
        mantissa >>= np.uint64(1 - power)
        mantissa += mantissa & np.uint64(1)
        mantissa >>= np.uint64(1)
        # Rounding up can reach the smallest normal number: its exponent bits are then 1.
        return _as_double(mantissa)
    if (
        low <= np.uint64(1)
        and -4 <= q <= 23
        and (mantissa & np.uint64(3)) == np.uint64(1)
        and (mantissa << shift) == high
    ):
        # Exactly halfway (possible only for these q): round to even, down here.
        mantissa &= ~np.uint64(1)
    mantissa += mantissa & np.uint64(1)
    mantissa >>= np.uint64(1)
    if mantissa >= np.uint64(2 << MANTISSA_BITS):
        mantissa = np.uint64(1 << MANTISSA_BITS)
        power += 1
    if power >= INFINITE_POWER:
        return np.inf
    mantissa &= ~np.uint64(1 << MANTISSA_BITS)
    return _as_double(mantissa | (np.uint64(power) << np.uint64(MANTISSA_BITS)))


@kernel(inline="always")
def _decimal_to_double(w, q):  # pragma: no cover
    """The double nearest to w · 10^q, for w < 2^64."""
    if w == 0:
        return 0.0
    if w <= LARGEST_EXACT_MANTISSA:
        if 0 <= q <= 22:
            return float(w) * POWERS_OF_TEN[np.uint64(q)]
        if -22 <= q < 0:
            return float(w) / POWERS_OF_TEN[np.uint64(-q)]
    return _eisel_lemire(w, q)


@kernel(inline="always")
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
@kernel(inline="always")
def _byte(data, pos):  # pragma: no cover
    return data[np.uint64(pos)]


@kernel(inline="never")
def _significant(data, pos):  # pragma: no cover
    """For the digits (and point) from ``pos`` on: (leading zeros, the first 19 significant
    digits as an integer, whether a nonzero digit follows them)."""
    leading = 0
    w = np.uint64(0)
    kept = 0
    nonzero_dropped = False
    c = _byte(data, pos)
    while (ZERO <= c <= NINE) or c == POINT:
        if c != POINT:
            if kept == 0 and c == ZERO:
                leading += 1
            elif kept < MAX_DIGITS:
                w = w * np.uint64(10) + np.uint64(c - ZERO)
                kept += 1
            elif c != ZERO:
                nonzero_dropped = True
        pos += 1
        c = _byte(data, pos)
    return leading, w, nonzero_dropped


@kernel(inline="always")
def _skip_line(data, pos):  # pragma: no cover
    while _byte(data, pos) != NEWLINE:
        pos += 1
    return pos + 1


@kernel(cache=True, nogil=True, boundscheck=False)
def _parse(
    data, pos, row, skip_header, destinations, delimiter, X, y, odd, n_odd
):  # pragma: no cover
    """The lines from byte ``pos`` on, parsed into X and y from ``row`` on.

    Returns (rows filled, where it stopped, odd lines): at the end of ``data``, or at the
    start of a line when X is full. A line that is not plain numbers is recorded in
    ``odd`` as (row, start, stop) and its row left unfilled; rows filled is GIVE_UP when
    ``odd`` is full. ``data`` must end with a line break: that sentinel ends every inner
    loop, so they test bytes, not positions.
    """
    end = data.shape[0]
    if skip_header:
        pos = _skip_line(data, pos)
    n_fields = destinations.shape[0]
    while pos < end:
        if row >= X.shape[0]:
            return row, pos, n_odd
        line_start = pos
        plain = True
        c = NEWLINE
        for field in range(n_fields):
            destination = destinations[np.uint64(field)]
            c = _byte(data, pos)
            if destination == SKIP:
                while c != delimiter and c != NEWLINE and c != CARRIAGE_RETURN:
                    if c == QUOTE:
                        plain = False
                        break
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
                    fraction = pos
                    # The first digits of the fraction a word at a time (a loop of them
                    # was slower: its exit is mispredicted), the rest one by one.
                    if pos + 8 <= end:
                        k, run = _digit_run(data, pos)
                        mantissa = mantissa * WORD_SCALES[np.uint64(k)] + run
                        pos += k
                    c = _byte(data, pos)
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
                            power = power * 10 + np.int64(c - ZERO)
                        written += 1
                        pos += 1
                        c = _byte(data, pos)
                    if not written:
                        plain = False
                    exponent += -power if negative_exponent else power
                if digits == 0:
                    # Only a truly empty cell is a missing value.
                    if pos != cell_start or (
                        c != delimiter and c != NEWLINE and c != CARRIAGE_RETURN
                    ):
                        plain = False
                    value = np.nan
                elif digits <= MAX_DIGITS:
                    value = _decimal_to_double(mantissa, exponent)
                else:
                    leading, w, nonzero_dropped = _significant(data, start)
                    kept = digits - leading
                    if kept > MAX_DIGITS:
                        exponent += kept - MAX_DIGITS
                    value = _decimal_to_double(w, exponent)
                    # The number lies between w and w + 1 (times 10^exponent): if they round
                    # alike, so does it; if not, pyarrow compares all its digits.
                    if nonzero_dropped and value != _decimal_to_double(w + np.uint64(1), exponent):
                        plain = False
                value = -value if negative else value
                if destination == TARGET:
                    y[np.uint64(row)] = value
                else:
                    X[np.uint64(row), np.uint64(destination)] = value
            if not plain:
                break
            if field < n_fields - 1:
                if c != delimiter:
                    plain = False
                    break
                pos += 1
        if plain:
            if c == CARRIAGE_RETURN:
                pos += 1
                c = _byte(data, pos)
            plain = c == NEWLINE
        if plain:
            pos += 1
        else:
            if n_odd == odd.shape[0]:
                return GIVE_UP, pos, n_odd
            pos = _skip_line(data, pos)
            odd[n_odd, 0] = row
            odd[n_odd, 1] = line_start
            odd[n_odd, 2] = pos
            n_odd += 1
        row += 1
    return row, pos, n_odd


@kernel(cache=True, nogil=True)
def _count_line_breaks(data):  # pragma: no cover
    count = 0
    for byte in data:
        count += byte == NEWLINE
    return count


@dataclass(frozen=True)
class PlainNumbers:
    """A chunk's rows, but for those of ``odd_lines``, which pyarrow must read.

    ``odd_lines`` holds the text of those lines, each with its line break, in the order
    of ``odd_rows``, the rows of ``batch`` they belong to.
    """

    batch: Batch
    odd_rows: np.ndarray
    odd_lines: bytes

    def completed(self, odd: Batch) -> Batch:
        """The batch with the rows of ``odd_lines`` as read elsewhere (``odd``, in order)."""
        self.batch.X[self.odd_rows] = odd.X
        if self.batch.y is not None:
            self.batch.y[self.odd_rows] = odd.y
        return self.batch


def parse_plain_numbers(
    data: memoryview,
    *,
    has_header: bool,
    destinations: np.ndarray,
    n_features: int,
    has_target: bool,
    delimiter: str,
) -> PlainNumbers | None:
    """A chunk of whole lines as a Batch (``first_row`` 0) and the lines pyarrow must read,
    or None when pyarrow must read the whole chunk.

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
    # Beyond half the lines, pyarrow reads the chunk as fast whole as line by line.
    odd = np.empty((capacity // 2 + 1, 3), dtype=np.int64)
    code = ord(delimiter)
    rows, stop, n_odd = _parse(text, 0, 0, has_header, destinations, code, X, y, odd, 0)
    while rows != GIVE_UP and stop < text.size:
        capacity = rows + _count_line_breaks(text[stop:])
        X = np.concatenate([X[:rows], np.empty((capacity - rows, n_features))])
        y = np.concatenate([y[:rows], np.empty(capacity - rows)]) if has_target else y
        rows, stop, n_odd = _parse(text, stop, rows, False, destinations, code, X, y, odd, n_odd)
    if rows == GIVE_UP:
        return None
    odd = odd[:n_odd]
    lines = b"".join(text[start:stop] for start, stop in odd[:, 1:].tolist())
    return PlainNumbers(Batch(X[:rows], y[:rows] if has_target else None, 0), odd[:, 0], lines)
