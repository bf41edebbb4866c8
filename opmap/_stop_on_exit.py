"""`StopOnExit`: a context manager that calls ``stop()`` on exit, for process handles."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class StopOnExit:
    """Mixin: ``with handle:`` returns the handle and calls ``handle.stop()`` on exit."""

    def stop(self) -> Any:
        """Stop what the handle runs (subclasses implement it)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
