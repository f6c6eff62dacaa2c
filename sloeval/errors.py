"""The one exception base: every error sloeval raises on purpose is a :class:`SloevalError`.

Its ``str()`` is one line a person can act on (file, SLO, field; endpoint; channel). Errors are
values: their fields are given when they are made and cannot change afterwards, so a handler
can never see an error that someone else rewrote on its way up.
"""

from __future__ import annotations

from typing import Any


class SloevalError(Exception):
    """Base of sloeval's errors: config, settings, Prometheus, delivery and state-store errors."""

    message: str

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        for name, value in {"message": message, **fields}.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, name: str, value: object) -> None:
        # Python itself sets dunders (__traceback__, __cause__, __notes__) on the way up: allowed.
        if getattr(self, "_sealed", False) and not (name.startswith("__") and name.endswith("__")):
            raise AttributeError(f"{type(self).__name__}.{name} is fixed when the error is made")
        super().__setattr__(name, value)

    def __str__(self) -> str:
        return self.message
