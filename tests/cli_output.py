"""What a command printed on stderr, checked the way the CLI's error boundary promises it."""


def one_line(capsys, *expected: str) -> str:
    """The single stderr line of a refused command (no traceback, not an internal error), containing
    every string of ``expected``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    for text in expected:
        assert text in lines[0], err
    return lines[0]
