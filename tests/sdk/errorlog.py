"""Shared by the Python client scripts (imported from the script's own directory)."""

import logging


class ErrorLog(logging.Handler):
    """Keeps every ERROR the client logs: some failures are only logged, never passed to on_error."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())
