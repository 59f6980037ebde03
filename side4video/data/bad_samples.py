"""Counting unreadable training inputs over an epoch, and stopping when there are too many."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from ..errors import DataError


class TooManyUnreadableInputs(DataError, RuntimeError):
    """Too many unreadable inputs: more of an epoch's samples than ``data.max_bad_fraction`` allows, or a
    training sample whose video and all ``data.max_retries`` replacements failed.

    A :class:`~side4video.errors.DataError`; it also stays a ``RuntimeError`` for callers that caught that.
    """


@dataclass
class BadSampleTracker:
    """Failed reads (``(path, reason)``, from batches' ``errors``) against samples served.

    Each failed read counts once, including a replacement that failed too. Merging across
    processes is up to the caller: sum the counts and concatenate ``errors``.
    """

    num_samples: int = 0
    num_errors: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def add(self, errors: Iterable[tuple[str, str]], num_samples: int) -> None:
        errors = [tuple(error) for error in errors]
        self.errors.extend(errors)
        self.num_errors += len(errors)
        self.num_samples += num_samples

    def reset(self) -> None:
        self.num_samples, self.num_errors, self.errors = 0, 0, []

    @property
    def fraction(self) -> float:
        return self.num_errors / self.num_samples if self.num_samples else 0.0

    def summary(self, max_listed: int = 5) -> str:
        text = (f"{self.num_errors} unreadable inputs for {self.num_samples} samples "
                f"({100 * self.fraction:.2f}%)")
        if not self.errors:
            return text
        listed = Counter(self.errors).most_common(max_listed)
        lines = [f"  {path}: {reason}" + (f" (x{count})" if count > 1 else "") for (path, reason), count in listed]
        more = len(set(self.errors)) - len(listed)
        return "\n".join([text + ":"] + lines + ([f"  ... and {more} more"] if more > 0 else []))

    def one_line(self, max_listed: int = 3) -> str:
        """The summary on one line: counts, then the most frequent ``path: reason`` pairs."""
        text = (f"{self.num_errors} unreadable inputs for {self.num_samples} samples "
                f"({100 * self.fraction:.2f}%)")
        if not self.errors:
            return text
        listed = Counter(self.errors).most_common(max_listed)
        more = len(set(self.errors)) - len(listed)
        shown = "; ".join(f"{path}: {reason}" + (f" (x{count})" if count > 1 else "")
                          for (path, reason), count in listed)
        return f"{text}, e.g. {shown}" + (f"; and {more} more" if more > 0 else "")

    def check(self, max_fraction: float) -> None:
        """Raise :class:`TooManyUnreadableInputs` (one line) when more than ``max_fraction`` of the samples needed
        a replacement."""
        if self.fraction > max_fraction:
            raise TooManyUnreadableInputs(
                f"too many unreadable training inputs: {self.one_line()}; this exceeds "
                f"data.max_bad_fraction={max_fraction}; list them with "
                f"'python -m side4video.tools.check_videos LIST --root DIR' and train on the clean list it writes")
