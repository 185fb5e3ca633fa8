"""The command line itself: help for every verb, usage exit codes, quick start."""

from __future__ import annotations

import pytest

from host_tools import cli


@pytest.mark.parametrize("key", list(cli.VERBS), ids=lambda k: " ".join(x for x in k if x))
def test_every_verb_has_help(key, capsys):
    argv = [x for x in key if x] + ["--help"]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "usage: shelfctl " + " ".join(x for x in key if x) in capsys.readouterr().out


def test_no_verb_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert all(group in out for group, _ in cli.VERBS)


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["deploy", "--port", "/dev/null", "--no-such-option"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_only_the_chosen_verb_is_imported():
    parser = cli.build_parser(["trace", "score"])
    # the other verbs are listed (their help), their arguments are not built
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"deploy", "trace", "sim"} <= set(sub)
    options = {o for a in sub["deploy"]._actions for o in a.option_strings}
    assert options == {"-h", "--help", "-v", "--verbose"}  # deploy's module was not asked


def test_verbose_is_taken_before_and_after_the_verb():
    for argv in (["-v", "deploy", "--port", "/dev/x"], ["deploy", "--port", "/dev/x", "-v"]):
        args = cli.build_parser(argv).parse_args(argv)
        assert args.verbose is True
    args = cli.build_parser(["deploy", "--port", "/dev/x"]).parse_args(["deploy", "--port", "x"])
    assert args.verbose is False
