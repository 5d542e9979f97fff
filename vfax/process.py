"""What a vfax process shares with whoever runs it, whether the command line or a service supervisor:
its exit codes and its JSON log lines. Here so that the service does not import the command line."""

from __future__ import annotations

import json
import logging

EXIT_FAILED = 1  # the fax (or call) did not succeed
EXIT_BAD_INPUT = 2  # the user's input was unusable; nothing was done


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line (time, level, logger, message), for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


def use_json_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonLogFormatter())
