"""pytest.ini turns deprecations attributed to the project's modules into
errors (the current stack must run without them) and leaves the libraries'
own ones alone."""
from __future__ import annotations

import warnings

import pytest


def _caller(module_name: str, category):
    """A function defined in a module called ``module_name`` that calls a
    library-style API warning with ``stacklevel=2`` (blaming its caller)."""
    def library_api():
        warnings.warn('this argument is deprecated', category, stacklevel=2)

    namespace = {'__name__': module_name, 'library_api': library_api}
    exec('def call():\n    library_api()\n', namespace)
    return namespace['call']


@pytest.mark.parametrize('category', [DeprecationWarning, FutureWarning,
                                      PendingDeprecationWarning])
def test_deprecation_blamed_on_project_code_fails(category):
    with pytest.raises(category, match='deprecated'):
        _caller('projects.sa2va.models.probe', category)()


def test_deprecation_in_tools_fails():
    with pytest.raises(DeprecationWarning):
        _caller('tools.probe', DeprecationWarning)()


def test_library_deprecation_is_not_an_error():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('default')
        _caller('mmengine.runner.probe', DeprecationWarning)()
    assert len(caught) == 1  # shown, not raised
    _caller('mmengine.runner.probe', DeprecationWarning)()  # ini: ignored
