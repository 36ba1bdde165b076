"""`deltatune methods`: every registry row is listed, a method's keys print with defaults, and an
unknown name is a clean error naming the known ones.

    .venv/bin/pytest tests/methods/test_methods_cli.py
"""

from __future__ import annotations

from deltatune.cli import main
from deltatune.methods.registry import METHODS


def test_every_method_is_listed_with_its_summary(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in out[1:]}
    assert listed == set(METHODS)
    assert all(METHODS[line.split()[0]].summary in line for line in out[1:])


def test_a_methods_keys_and_an_unknown_name(capsys):
    assert main(["methods", "qlora"]) == 0
    out = capsys.readouterr().out
    assert "method.bits: 4" in out and "method.r: 8" in out
    assert main(["methods", "nope"]) == 2
    assert "known:" in capsys.readouterr().err
