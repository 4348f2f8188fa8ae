"""Argument checks shared by the CIFAR model builders (private)."""

import numbers


def check_int(name, value, minimum=1):
    """Raises unless `value` is an int >= `minimum` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_input_shape(input_shape, min_size=1):
    """Checks an `(height, width, channels)` tuple; sizes may be None."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    ok = shape is not None and len(shape) == 3
    if ok:
        for i, dim in enumerate(shape):
            if dim is None and i < 2:
                continue
            if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
                ok = False
            elif dim < (min_size if i < 2 else 1):
                ok = False
    if not ok:
        raise ValueError(
            "`input_shape` must be a channels-last tuple (height, width, "
            f"channels) of positive integers, height and width >= {min_size} "
            "(or None), e.g. (32, 32, 3). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(None if d is None else int(d) for d in shape)
