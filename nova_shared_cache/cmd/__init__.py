"""The command-line entry points; what their parsers share."""

import argparse

#: The help of every command's --json.
JSON_HELP = ('exactly one JSON document on standard output, whatever the '
             'outcome (errors too, with exit_code and meaning)')


def whole_number(option, low, high=None, unit=''):
    """An argparse type: a whole number from ``low`` (to ``high``).

    The error names the option and what it takes, e.g. "--expire must be
    a whole number of seconds >= 1, not 'x'".
    """
    if high is None:
        wanted = 'a whole number%s >= %d' % (unit, low)
    else:
        wanted = 'a whole number%s from %d to %d' % (unit, low, high)

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None
                                            and value > high):
            raise argparse.ArgumentTypeError(
                '%s must be %s, not %r' % (option, wanted, text))
        return value
    return parse
