"""Restricted unpickling of the pickled annotation files.

Two data files of the Sa2VA mix are pickles: RefCOCO's ``refs(unc).p`` /
``refs(umd).p`` (a Python 2 pickle of a list of ref dicts) and
Ref-YouTube-VOS's ``mask_dict.pkl`` (a dict ``str(index) -> list of RLE
dicts or None`` whose RLE ``counts`` are ``bytes``). Plain ``pickle.load``
runs whatever callable a pickle names, so a downloaded file could execute
code. :func:`load_data_pickle` builds only plain data:

* containers and scalars the pickle opcodes make themselves (dict, list,
  tuple, str, int, float, bool, None, bytes in protocol >= 3);
* ``bytes`` written by protocol 0-2 pickles, which name a global:
  ``_codecs.encode(text, 'latin1')`` (non-empty bytes) and
  ``__builtin__.bytes()`` / ``builtins.bytes()`` (empty bytes). These are
  the only globals the real files need; each is replaced by a function that
  accepts exactly these arguments.

Any other global (``os.system``, ``builtins.eval``, a class, ...) or a
persistent id is refused with :class:`UnsafePickleError` naming the file and
the global, before anything is called. A truncated or corrupt file is a
``ValueError`` naming the file.
"""
from __future__ import annotations

import pickle

__all__ = ['UnsafePickleError', 'load_data_pickle', 'ALLOWED_GLOBALS']

_LATIN1 = ('latin1', 'latin-1', 'iso-8859-1', 'iso8859-1', 'l1')


class UnsafePickleError(pickle.UnpicklingError):
    """A data pickle names a global outside :data:`ALLOWED_GLOBALS`."""


def _latin1_bytes(text, encoding='utf-8', errors='strict'):
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``."""
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1 \
            or errors != 'strict':
        raise UnsafePickleError(
            f'_codecs.encode is allowed only as encode(str, "latin1"), got '
            f'encode({type(text).__name__}, {encoding!r})')
    return text.encode('latin1')


def _plain_bytes(*args):
    """``bytes()`` / ``bytes(list of ints)`` / ``bytes(str, 'latin1')``."""
    if not args:
        return b''
    if len(args) == 1 and isinstance(args[0], (bytes, list, tuple)):
        return bytes(args[0])
    if len(args) == 2 and isinstance(args[0], str):
        return _latin1_bytes(*args)
    raise UnsafePickleError(f'bytes() is allowed only with no argument, a '
                            f'list of ints or (str, "latin1"), got '
                            f'{len(args)} arguments')


#: ``(module, name)`` as written in the pickle -> the safe stand-in.
ALLOWED_GLOBALS = {
    ('_codecs', 'encode'): _latin1_bytes,
    ('__builtin__', 'bytes'): _plain_bytes,
    ('builtins', 'bytes'): _plain_bytes,
}


class _DataUnpickler(pickle.Unpickler):

    def __init__(self, file, path: str, **kwargs):
        super().__init__(file, **kwargs)
        self._path = path

    def find_class(self, module, name):
        stand_in = ALLOWED_GLOBALS.get((module, name))
        if stand_in is None:
            raise UnsafePickleError(
                f'{self._path}: refusing to load global {module}.{name} '
                f'(a data pickle may only hold dicts, lists, strings, '
                f'numbers and bytes; this file could run code)')
        return stand_in

    def persistent_load(self, pid):
        raise UnsafePickleError(f'{self._path}: refusing persistent id '
                                f'{pid!r} (not a plain data pickle)')


def load_data_pickle(path: str, encoding: str = 'latin1'):
    """Load a data pickle with the restricted unpickler.

    Args:
        path: the pickle file.
        encoding: how Python 2 ``str`` objects are decoded (``'latin1'``,
            as the refer API loads its pickles).

    Returns:
        the unpickled plain data.

    Raises:
        UnsafePickleError: the file names a global that is not allowed
            (message names the file and the global).
        ValueError: the file is empty, truncated or not a pickle (message
            names the file).
        FileNotFoundError / OSError: the file cannot be read.
    """
    with open(path, 'rb') as f:
        try:
            return _DataUnpickler(f, str(path), encoding=encoding).load()
        except UnsafePickleError as exc:
            if str(path) in str(exc):
                raise
            raise UnsafePickleError(f'{path}: {exc}') from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
                IndexError, KeyError, AttributeError, UnicodeDecodeError,
                MemoryError, OverflowError) as exc:
            raise ValueError(f'{path}: not a readable pickle (empty, '
                             f'truncated or corrupt): {type(exc).__name__}: '
                             f'{exc}') from None
