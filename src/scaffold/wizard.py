"""`scaffold new`: answer the template's questions, generate the key, render the project."""

from __future__ import annotations

import hashlib
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold.errors import AnswerError
from scaffold.questions import MISSING, WIZARD_SUPPLIED, Questionnaire, QuestionSpec
from scaffold.render import LOCAL_SETTINGS, TemplateRef, check_new_destination, copy_project, template_file


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
    """The questions of `template` at its ref (the revision copier renders), from its copier.yml."""
    text = template_file(template, "copier.yml")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "copier.yml"
        path.write_text(text, encoding="utf-8")
        return Questionnaire.from_copier_yml(path)


def new_project(
    dest: Path,
    template: TemplateRef,
    *,
    data: Mapping[str, Any],
    interactive: bool,
    save_key: bool | None,
    make_key: bool = True,
    quiet: bool = False,
    on_created: Callable[[NewProject], None] | None = None,
) -> NewProject:
    """Render a new thin-client project into `dest`.

    With `interactive`, unanswered questions are asked with questionary prompts built from
    the template's own specs; otherwise they take their defaults. Unless `data` names an
    `api_key_hash` (or `make_key` is off), a key is generated and only its hash reaches copier.
    `save_key=None` asks (interactive) or does not save (non-interactive). The project
    appears in `dest` whole or not at all; `on_created` announces it (see `copy_project`).
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
    # The wizard warns when worker_roles is asked; given roles are never asked, so warn here.
    if (not interactive or "worker_roles" in given) and (warning := roles_warning(context)):
        print(f"scaffold: warning: {warning}", file=sys.stderr)
    answers = questions.recorded(context)
    if interactive:
        _confirm_summary(answers, dest)
        if key and save_key is None:
            save_key = _confirm(
                "Save the API key to .claude/settings.local.json (git-ignored) for local sessions?",
                default=True,
            )
    local_key = key if key and save_key else None
    project = NewProject(dest, answers, template, key, dest / LOCAL_SETTINGS if local_key else None)
    copy_project(
        dest,
        answers,
        template,
        quiet=quiet,
        local_key=local_key,
        on_created=(lambda: on_created(project)) if on_created else None,
    )
    return project


DECISION_GUIDE = "docs/decision-guide.md"
"""In the scaffold's repository: when a team pays off, and how many sessions a machine holds."""


def decision_guide() -> str:
    """Where to read the decision guide: the file itself when scaffold runs from its checkout."""
    checkout = Path(__file__).resolve().parents[2] / DECISION_GUIDE
    return str(checkout) if checkout.is_file() else f"{DECISION_GUIDE} in the vps-agent-scaffold repository"


def first_screen() -> str:
    """What the wizard shows before its first question."""
    return (
        "A new project: a coordinator and workers sharing a hub.\n"
        "Not sure a team pays off, or how many sessions your machine holds? Read the decision guide:\n"
        f"  {decision_guide()}\n"
    )


def roles_warning(answers: Mapping[str, Any]) -> str:
    """One line when fewer workers are planned than roles chosen, else "".

    Worker i takes role (i - 1) mod len(worker_roles), so the last roles would run on no worker:
    the playbooks leave them out (copier.yml's `running_roles`), and a task requiring only
    their tags would wait for ever."""
    roles, count = answers.get("worker_roles") or [], answers.get("worker_count")
    if not isinstance(count, int) or count >= len(roles):
        return ""
    left_out = ", ".join(roles[count:])
    return (
        f"worker_count {count} is below the {len(roles)} roles chosen: workers take the roles in turn, "
        f"so no worker runs {left_out} and the playbooks leave {'it' if len(roles) - count == 1 else 'them'} "
        f"out; plan {len(roles)} workers, or choose fewer roles"
    )


class _Prompter:
    """Turns question specs into questionary prompts; the spec's validator judges each answer."""

    def __init__(self, questions: Questionnaire) -> None:
        self.questions = questions
        self.greeted = False

    def ask(self, spec: QuestionSpec, default: Any, context: dict[str, Any]) -> Any:
        import questionary

        if spec.name in WIZARD_SUPPLIED:
            raise AnswerError(spec.name, "is supplied by the wizard, not asked")
        if not self.greeted:  # after the given answers passed their checks, before the first question
            questionary.print(first_screen())
            self.greeted = True
        while True:
            answer = self._ask(spec, default, context)
            warning = roles_warning({**context, spec.name: answer})
            if not warning or spec.name != "worker_roles":
                return answer
            questionary.print(f"warning: {warning}")
            if _confirm("Keep these roles anyway? (no: choose them again)", default=True):
                return answer
            default = answer

    def _ask(self, spec: QuestionSpec, default: Any, context: dict[str, Any]) -> Any:
        import questionary

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
