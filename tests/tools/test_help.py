"""Every tool's --help describes every argument (no bare option names) and
says what the tool does."""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = sorted(p.name for p in (REPO / 'tools').glob('*.py'))


class _Got(Exception):
    pass


def tool_parser(name: str) -> argparse.ArgumentParser:
    """The parser ``tools/<name>`` builds (its main() stops there)."""
    orig = argparse.ArgumentParser.parse_args

    def grab(self, *args, **kwargs):
        raise _Got(self)
    argparse.ArgumentParser.parse_args = grab
    saved = sys.argv
    sys.argv = [name]
    try:
        runpy.run_path(str(REPO / 'tools' / name), run_name='__main__')
    except _Got as got:
        return got.args[0]
    finally:
        argparse.ArgumentParser.parse_args = orig
        sys.argv = saved
    raise AssertionError(f'{name} built no argparse parser')


@pytest.mark.parametrize('name', TOOLS)
def test_help_is_complete(name):
    parser = tool_parser(name)
    assert parser.description and len(parser.description) > 10, name
    bare = [a.option_strings[0] if a.option_strings else a.dest
            for a in parser._actions
            if not isinstance(a, argparse._HelpAction)
            and (not a.help or a.help == argparse.SUPPRESS)]
    assert not bare, f'{name}: arguments without help: {bare}'
