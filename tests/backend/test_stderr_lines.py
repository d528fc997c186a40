"""The stderr line reader: lines cut at the cap are one line (the rest of one is never a line of its
own), a cut inside a character holds it back, and lines over the rate are counted, not returned."""

from __future__ import annotations

from mcpmesh.backend.stderr_lines import Budget, StderrLines


def read(reader: StderrLines, data: bytes, chunk: int) -> list[str]:
    lines = [line for at in range(0, len(data), chunk) for line in reader.feed(data[at : at + chunk])]
    return lines + list(reader.finish())


def test_an_over_long_line_is_cut_once_and_its_rest_skipped_however_it_arrives() -> None:
    data = b"a" * 300_000 + b"SECRETSUFFIX\nnext\n"  # longer than one 256 KiB read
    for chunk in (7, 4096, 256 * 1024, len(data)):
        assert read(StderrLines(64 * 1024, Budget(1e9, 10**9)), data, chunk) == ["a" * 64 * 1024, "next"]
    assert read(StderrLines(10, Budget(1e9, 10**9)), b"a" * 30 + b"SUFFIX\nnext\n", 1) == ["a" * 10, "next"]


def test_a_cut_inside_a_character_drops_the_partial_character() -> None:
    assert read(StderrLines(6, Budget(1e9, 10**9)), "abcdeé tail\nok".encode(), 3) == ["abcde", "ok"]


def test_lines_over_the_rate_are_counted_and_not_returned() -> None:
    budget = Budget(1e-9, 3)  # three lines, then (practically) none
    reader = StderrLines(10, budget)
    lines = read(reader, b"one\ntwo\nthree\nfour\nfive-is-long\nsix\n", 5)
    assert lines == ["one", "two", "three"] and budget.skipped == 3
