"""Log setup shared by every command (placeholder; replaced by the logs work)."""

from absl import logging


class _LibraryInfoFilter:
  _NOISY = ('/orbax/', '/tensorstore', '/tensorflow_datasets/')

  def filter(self, record) -> bool:
    return record.levelno > logging.INFO or not any(
        n in record.pathname for n in self._NOISY)


def setup() -> None:
  logging.get_absl_handler().python_handler.addFilter(_LibraryInfoFilter())
