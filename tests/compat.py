"""Test-runner glue shared by the unit and functional suites."""

import os


def source_tree():
    """The checkout whose files (setup.cfg, tox.ini, etc/) tests read.

    Normally the tree this file is in. ``tox -e package`` runs a copy of
    the tests against the installed wheel, away from the checkout (so that
    nothing is imported from it), and names the checkout in
    ``NSC_SOURCE_TREE``.
    """
    return os.environ.get('NSC_SOURCE_TREE') or os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))


class KeepTestMethodMixin:
    """Let Nova's test base run under pytest 9.

    Nova's base class deletes every public attribute at cleanup; pytest >= 9
    stores the test method on the instance under its own name and deletes
    it after the run, so keep that one attribute.
    """

    def _clear_attrs(self):
        method = self.__dict__.get(self._testMethodName)
        super()._clear_attrs()
        if method is not None:
            self.__dict__[self._testMethodName] = method
