"""One error hierarchy: every failure a user can cause is a `ScaffoldError` with a message
written for them; the CLI prints it as one line and exits with `exit_code`."""

from __future__ import annotations


class ScaffoldError(Exception):
    """A failure the user can act on. `str(error)` is the whole message."""

    exit_code = 1


class AnswerError(ScaffoldError):
    """An answer to a template question is invalid."""

    def __init__(self, question: str, message: str) -> None:
        super().__init__(f"{question}: {message}")
        self.question = question
        self.reason = message


class DestinationError(ScaffoldError):
    """The destination of `scaffold new` or `scaffold update` cannot be used."""


class TemplateError(ScaffoldError):
    """The template cannot be found, versioned or rendered."""


class UpdateConflictError(ScaffoldError):
    """`scaffold update` merged with conflicts that the user must resolve."""

    exit_code = 3

    def __init__(self, files: list[str]) -> None:
        listing = ", ".join(files)
        super().__init__(
            f"the update left conflicts in {len(files)} file(s): {listing}. "
            "Resolve the <<<<<<< markers (or apply the .rej files), then commit."
        )
        self.files = files
