"""Test-runner glue shared by the unit and functional suites."""


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
