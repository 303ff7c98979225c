"""Argument checks shared by every constructor: one place, one style of message.

Each checker returns the value in a plain form (a Python int, float, bool or
tuple of ints, so that configs stay JSON-friendly) or raises:

* ``TypeError`` when the kind of value is wrong: a string, None, a float
  where an int belongs, a bool where a number belongs;
* ``ValueError`` when the value is of the right kind but out of range.

The message names the owner (a layer, optimizer or function), the argument,
what would be valid and what was given, e.g.
``Conv2D: stride must be a positive int or a pair of them, got 0``.
NumPy scalars (``np.int64(3)``, ``np.float32(0.1)``) are accepted like
Python numbers.
"""
import math
import numbers


class NonFiniteError(ValueError):
    """An array that must hold finite numbers holds NaN or infinity."""


def _shown(value):
    if value is None:
        return "None"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = type(value).__name__
    return text if isinstance(value, (int, float)) and not isinstance(value, bool) else f"{text} (a {kind})"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_words(minimum):
    return {0: "an int >= 0", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")


def _must(owner, name):
    """The start of a refusal: ``"owner: name must be"``; either may be None (a command-line flag's value)."""
    return " ".join(part for part in (owner and f"{owner}:", name, "must be") if part)


def integer(value, name, owner, minimum=1, maximum=None):
    """``value`` as an int >= ``minimum`` (and <= ``maximum``); bools, floats and strings are refused."""
    what = _int_words(minimum) if maximum is None else f"an int from {minimum} to {maximum}"
    if not _is_int(value):
        raise TypeError(f"{_must(owner, name)} {what}, got {_shown(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{_must(owner, name)} {what}, got {value}")
    return int(value)


def int_pair(value, name="value", owner=None, minimum=0):
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``: an int or a pair of ints, each >= ``minimum``."""
    what = f"{_int_words(minimum)} or a pair of them"
    prefix = f"{owner}: " if owner else ""
    if _is_int(value):
        values = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        values = tuple(value)
    else:
        raise TypeError(f"{prefix}{name} must be {what}, got {_shown(value)}")
    if min(values) < minimum:
        raise ValueError(f"{prefix}{name} must be {what}, got {value!r}")
    return int(values[0]), int(values[1])


def padding(value, name, owner):
    """Padding of a 2-D window: an int (every side), a pair ``(ph, pw)`` (both ends of each axis) or
    ``(left, right, top, bottom)``, the order of PyTorch's ``F.pad`` and ``nn.ZeroPad2d``; each int >= 0.

    Returned as ``(ph, pw)`` where both ends of each axis are alike (``(1, 1, 1, 1)`` is ``(1, 1)``), else as
    ``(left, right, top, bottom)``: one value, one form, so that configs compare equal.
    """
    what = "an int >= 0, a pair of them (ph, pw) or (left, right, top, bottom)"
    prefix = f"{owner}: " if owner else ""
    if _is_int(value):
        values = (value,) * 4
    elif isinstance(value, (tuple, list)) and len(value) in (2, 4) and all(_is_int(v) for v in value):
        values = tuple(value) if len(value) == 4 else (value[1], value[1], value[0], value[0])
    else:
        raise TypeError(f"{prefix}{name} must be {what}, got {_shown(value)}")
    if min(values) < 0:
        raise ValueError(f"{prefix}{name} must be {what}, got {value!r}")
    left, right, top, bottom = (int(v) for v in values)
    return (top, left) if (left, top) == (right, bottom) else (left, right, top, bottom)


def real(value, name, owner, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite float within the bounds given (``low_open``: ``value > low``, else ``>=``)."""
    if low is not None and high is not None:
        what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        what = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        what = "a finite number"
    if not _is_real(value):
        raise TypeError(f"{_must(owner, name)} {what}, got {_shown(value)}")
    value = float(value)
    too_low = low is not None and (value < low or (low_open and value == low))
    too_high = high is not None and (value > high or (high_open and value == high))
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"{_must(owner, name)} {what}, got {value}")
    return value


def flag(value, name, owner):
    """``value`` as a bool; anything else (``"False"``, 0, None) is refused, since its truth would mislead."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")  # np.True_ (2.x, 1.x)
    if not isinstance(value, bool) and not numpy_bool:
        raise TypeError(f"{owner}: {name} must be True or False, got {_shown(value)}")
    return bool(value)


def one_of(value, name, owner, choices):
    """``value`` if it is one of ``choices`` (strings), else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: {name} must be one of {options}, got {_shown(value)}")
    return value
