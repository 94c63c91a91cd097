"""A different package that happens to be called ``longmem`` (e.g. a typo-squat or an unrelated
project): no ``Longmem`` client with ``export_account``. The adapter must refuse it."""


class Longmem:
    def remember(self, text):
        return text


def hello():
    return "not the SDK"
