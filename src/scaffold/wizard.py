"""`scaffold new`: answer the template's questions, generate the key, render the project."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold.errors import AnswerError, TemplateError
from scaffold.questions import MISSING, WIZARD_SUPPLIED, Questionnaire, QuestionSpec
from scaffold.render import TemplateRef, check_new_destination, copy_project, save_local_key


@dataclass(frozen=True)
class NewProject:
    dest: Path
    answers: dict[str, Any]
    template: TemplateRef
    key: str | None
    """The generated API key: show it once, never store it in a tracked file."""
    key_file: Path | None
    """Where the key was saved (the git-ignored local settings), if it was."""


def generate_key() -> tuple[str, str]:
    """A new API key and its SHA-256 hex digest (what the hub and the answers file keep)."""
    key = secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def load_questions(template: TemplateRef) -> Questionnaire:
    """The questions of `template` at its ref, read from its copier.yml."""
    root = Path(template.src)
    if not root.is_dir():
        raise TemplateError(
            f"the wizard reads questions from a local template; clone {template.src} and pass its path"
        )
    if template.ref and (root / ".git").exists():
        shown = subprocess.run(
            ["git", "show", f"{template.ref}:copier.yml"],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if shown.returncode != 0:
            raise TemplateError(f"no copier.yml at {template.ref} in {root}: {shown.stderr.strip()}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "copier.yml"
            path.write_text(shown.stdout, encoding="utf-8")
            return Questionnaire.from_copier_yml(path)
    return Questionnaire.from_copier_yml(root / "copier.yml")


def new_project(
    dest: Path,
    template: TemplateRef,
    *,
    data: Mapping[str, Any],
    interactive: bool,
    save_key: bool | None,
    make_key: bool = True,
    quiet: bool = False,
) -> NewProject:
    """Render a new thin-client project into `dest`.

    With `interactive`, unanswered questions are asked with questionary prompts built from
    the template's own specs; otherwise they take their defaults. Unless `data` names an
    `api_key_hash` (or `make_key` is off), a key is generated and only its hash reaches copier.
    `save_key=None` asks (interactive) or does not save (non-interactive).
    """
    check_new_destination(dest)
    questions = load_questions(template)
    given = dict(data)
    key: str | None = None
    if "api_key_hash" not in given:
        if make_key:
            key, given["api_key_hash"] = generate_key()
        else:
            given["api_key_hash"] = ""
    context = questions.resolve(given, ask=_Prompter(questions).ask if interactive else None)
    answers = questions.recorded(context)
    if interactive:
        _confirm_summary(answers, dest)
        if key and save_key is None:
            save_key = _confirm(
                "Save the API key to .claude/settings.local.json (git-ignored) for local sessions?",
                default=True,
            )
    copy_project(dest, answers, template, quiet=quiet)
    key_file = save_local_key(dest, key) if key and save_key else None
    return NewProject(dest, answers, template, key, key_file)


class _Prompter:
    """Turns question specs into questionary prompts; the spec's validator judges each answer."""

    def __init__(self, questions: Questionnaire) -> None:
        self.questions = questions

    def ask(self, spec: QuestionSpec, default: Any, context: dict[str, Any]) -> Any:
        import questionary

        if spec.name in WIZARD_SUPPLIED:
            raise AnswerError(spec.name, "is supplied by the wizard, not asked")

        def judge(raw: Any) -> bool | str:
            try:
                self.questions.check(spec, raw, context)
            except AnswerError as error:
                return error.reason
            return True

        message = f"{spec.name}: {spec.help}" if spec.help else spec.name
        if spec.multiselect:
            chosen = default if isinstance(default, list) else []
            answer = questionary.checkbox(
                message,
                choices=[
                    questionary.Choice(c.title, value=c.value, checked=c.value in chosen)
                    for c in spec.choices
                ],
                validate=judge,
            ).unsafe_ask()
        elif spec.choices:
            answer = questionary.select(
                message,
                choices=[questionary.Choice(c.title, value=c.value) for c in spec.choices],
                default=None if default is MISSING else default,
            ).unsafe_ask()
        elif spec.type == "bool":
            answer = questionary.confirm(message, default=bool(default)).unsafe_ask()
        else:
            answer = questionary.text(
                message, default="" if default is MISSING else str(default), validate=judge
            ).unsafe_ask()
        return self.questions.check(spec, answer, context)


def _confirm(message: str, *, default: bool) -> bool:
    import questionary

    return bool(questionary.confirm(message, default=default).unsafe_ask())


def _confirm_summary(answers: Mapping[str, Any], dest: Path) -> None:
    import questionary

    lines = [f"  {name}: {value}" for name, value in answers.items() if name not in WIZARD_SUPPLIED]
    questionary.print("\n".join(["Project to create:", *lines]))
    if not _confirm(f"Create it in {dest}?", default=True):
        raise KeyboardInterrupt
