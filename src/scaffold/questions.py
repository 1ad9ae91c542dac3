"""The template's questions as plain data, read from `copier.yml`.

`copier.yml` is the one source of truth: copier prompts from it, and `scaffold new` builds
its wizard from the same specs. Defaults, `when` conditions and validators are Jinja
strings; they are rendered here in a sandbox with the same filters copier loads, so an
answer the wizard accepts is one copier accepts too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateError as JinjaTemplateError
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from scaffold.errors import AnswerError, TemplateError

# Copier loads these filters into every template environment; validators rely on them.
JINJA_EXTENSIONS = ["jinja2_ansible_filters.AnsibleCoreFiltersExtension"]

# Answers the wizard supplies itself instead of asking (the key is generated, never typed).
WIZARD_SUPPLIED = frozenset({"api_key_hash"})

_SCALAR_TYPES: dict[str, Callable[[Any], Any]] = {"str": str, "int": int, "float": float}
_TRUE = {"y", "yes", "true", "on", "1"}
_FALSE = {"n", "no", "false", "off", "0"}


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A question with no usable default (copier's `{{ UNSET }}`)."""


class _UnsetRendered(Exception):
    """Raised while rendering `{{ UNSET }}`: the default is deliberately missing."""


class _Unset:
    def __str__(self) -> str:
        raise _UnsetRendered


@dataclass(frozen=True)
class Choice:
    title: str
    value: Any


@dataclass(frozen=True)
class QuestionSpec:
    """One question of `copier.yml`, as written there (Jinja strings not yet rendered)."""

    name: str
    type: str = "str"
    help: str = ""
    default: Any = MISSING
    choices: tuple[Choice, ...] = ()
    multiselect: bool = False
    validator: str = ""
    when: str | bool = True
    secret: bool = False

    @property
    def computed(self) -> bool:
        """`when: false`: derived from other answers, never asked or recorded."""
        return self.when is False


@dataclass
class Questionnaire:
    """The ordered questions of a template and the rules to answer them."""

    specs: tuple[QuestionSpec, ...]
    env: SandboxedEnvironment = field(
        default_factory=lambda: SandboxedEnvironment(extensions=JINJA_EXTENSIONS, keep_trailing_newline=True)
    )

    @classmethod
    def from_copier_yml(cls, path: Path) -> Questionnaire:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise TemplateError(f"cannot read the template questions in {path}: {error}") from error
        if not isinstance(raw, dict):
            raise TemplateError(f"{path} is not a mapping of questions")
        return cls(tuple(_spec(name, body) for name, body in raw.items() if not name.startswith("_")))

    def __iter__(self) -> Iterator[QuestionSpec]:
        return iter(self.specs)

    def __getitem__(self, name: str) -> QuestionSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    # -- rendering ------------------------------------------------------------------------

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        """Render a Jinja string against the answers so far; other values pass through."""
        if isinstance(value, list):
            return [self.render(item, context) for item in value]
        if not isinstance(value, str):
            return value
        try:
            return self.env.from_string(value).render({**context, "UNSET": _Unset()})
        except _UnsetRendered:
            raise
        except JinjaTemplateError as error:
            raise TemplateError(f"cannot render {value!r}: {error}") from error

    def is_asked(self, spec: QuestionSpec, context: Mapping[str, Any]) -> bool:
        if isinstance(spec.when, bool):
            return spec.when
        return _to_bool(self.render(spec.when, context))

    def default(self, spec: QuestionSpec, context: Mapping[str, Any]) -> Any:
        """The question's default as a typed value, or MISSING."""
        if spec.default is MISSING:
            return MISSING
        try:
            rendered = self.render(spec.default, context)
        except _UnsetRendered:
            return MISSING
        return self.parse(spec, rendered)

    # -- answers --------------------------------------------------------------------------

    def parse(self, spec: QuestionSpec, raw: Any) -> Any:
        """Cast a raw answer (typed, or text from a prompt or `--data`) to the question's type."""
        if spec.multiselect:
            items = yaml.safe_load(raw) if isinstance(raw, str) else raw
            if items is None:
                items = []
            if not isinstance(items, list):
                raise AnswerError(spec.name, f"expected a list such as [a, b], got {raw!r}")
            values = [self._cast(spec, item) for item in items]
            for value in values:
                self._check_choice(spec, value)
            # Keep the template's order and drop repeats, as copier does.
            return [c.value for c in spec.choices if c.value in values]
        value = self._cast(spec, raw)
        self._check_choice(spec, value)
        return value

    def validate(self, spec: QuestionSpec, value: Any, context: Mapping[str, Any]) -> str:
        """The validator's message for `value`, or "" when it is valid."""
        if not spec.validator:
            return ""
        try:
            message = self.render(spec.validator, {**context, spec.name: value})
        except (_UnsetRendered, TemplateError) as error:
            return f"invalid value ({error})"
        return " ".join(str(message).split())

    def check(self, spec: QuestionSpec, raw: Any, context: Mapping[str, Any]) -> Any:
        """Parse and validate; raise AnswerError with the validator's message."""
        value = self.parse(spec, raw)
        message = self.validate(spec, value, context)
        if message:
            raise AnswerError(spec.name, message)
        return value

    def resolve(
        self,
        data: Mapping[str, Any],
        ask: Callable[[QuestionSpec, Any, dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        """Answer every question in order.

        An answer comes from `data`, else from `ask(spec, default, context)` when given, else
        from the default. Every answer is validated. Returns the context: the asked answers
        plus the computed values (see `recorded`).
        """
        self.check_data(data, prompting=ask is not None)
        context: dict[str, Any] = {}
        for spec in self.specs:
            if not self.is_asked(spec, context):
                default = self.default(spec, context)
                if default is not MISSING:
                    context[spec.name] = default
                continue
            if spec.name in data:
                context[spec.name] = self.check(spec, data[spec.name], context)
                continue
            default = self.default(spec, context)
            if ask is not None:
                context[spec.name] = ask(spec, default, context)
                continue
            if default is MISSING:
                raise AnswerError(spec.name, f"an answer is required ({spec.help})")
            context[spec.name] = self.check(spec, default, context)
        return context

    def check_data(self, data: Mapping[str, Any], *, prompting: bool) -> None:
        """Refuse a bad answer in `data` before anything is asked.

        Names must be questions, and not computed ones; every value must have the question's
        type and be one of its choices. When `prompting`, each given answer is also validated
        now if its question and its validator depend only on answers that are known without
        prompting (given, or computed from given ones); the others are validated in turn by
        `resolve`. Without prompting, `resolve` validates everything before it returns.
        """
        asked = [name for name in self.names if not self[name].computed]
        for name in data:
            if name not in self.names:
                raise AnswerError(name, f"no such question; the questions are: {', '.join(asked)}")
            spec = self[name]
            if spec.computed:
                raise AnswerError(name, self._computed_reason(spec))
            self.parse(spec, data[name])
        if not prompting:
            return
        context: dict[str, Any] = {}
        unknown: set[str] = set()  # answers that only a prompt will give
        for spec in self.specs:
            if self.inputs(spec.when) & unknown:
                unknown.add(spec.name)
            elif not self.is_asked(spec, context):
                if self.inputs(spec.default) & unknown:
                    unknown.add(spec.name)
                elif (default := self.default(spec, context)) is not MISSING:
                    context[spec.name] = default
            elif spec.name not in data:
                unknown.add(spec.name)
            elif self.inputs(spec.validator) & unknown:
                context[spec.name] = self.parse(spec, data[spec.name])
            else:
                context[spec.name] = self.check(spec, data[spec.name], context)

    def inputs(self, source: Any) -> set[str]:
        """The names a Jinja string (a default, `when` or validator) reads."""
        if not isinstance(source, str):
            return set()
        try:
            used = meta.find_undeclared_variables(self.env.parse(source))
        except JinjaTemplateError as error:
            raise TemplateError(f"cannot parse {source!r}: {error}") from error
        return used & set(self.names)

    def _computed_reason(self, spec: QuestionSpec) -> str:
        sources = [name for name in self.names if name in self.inputs(spec.default)]
        if not sources:
            return "fixed by the template, not a question" + (f" ({spec.help})" if spec.help else "")
        if len(sources) == 1:
            return f"computed from {sources[0]}, not a question; answer that instead"
        listed = f"{', '.join(sources[:-1])} and {sources[-1]}"
        return f"computed from {listed}, not a question; answer those instead"

    def recorded(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The answers copier is given: asked questions only, computed values left out."""
        return {
            spec.name: context[spec.name]
            for spec in self.specs
            if spec.name in context and self.is_asked(spec, context)
        }

    # -- helpers --------------------------------------------------------------------------

    def _cast(self, spec: QuestionSpec, raw: Any) -> Any:
        if spec.type in ("yaml", "json"):
            return yaml.safe_load(raw) if isinstance(raw, str) else raw
        if spec.type == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise AnswerError(spec.name, f"expected yes or no, got {raw!r}")
        cast = _SCALAR_TYPES.get(spec.type)
        if cast is None:
            raise TemplateError(f"question {spec.name} has unsupported type {spec.type!r}")
        if raw is None or isinstance(raw, (list, dict)):
            raise AnswerError(spec.name, f"expected a single {spec.type} value, got {raw!r}")
        try:
            return cast(raw.strip() if isinstance(raw, str) and cast is not str else raw)
        except (TypeError, ValueError):
            raise AnswerError(spec.name, f"expected a whole number, got {raw!r}") from None

    def _check_choice(self, spec: QuestionSpec, value: Any) -> None:
        if spec.choices and value not in [c.value for c in spec.choices]:
            allowed = ", ".join(str(c.value) for c in spec.choices)
            raise AnswerError(spec.name, f"{value!r} is not one of: {allowed}")


def _spec(name: str, body: Any) -> QuestionSpec:
    if not isinstance(body, dict):  # copier's short form `name: default`
        return QuestionSpec(name=name, type=_type_of(body), default=body)
    choices = body.get("choices") or ()
    if isinstance(choices, dict):
        parsed = tuple(Choice(str(title), value) for title, value in choices.items())
    else:
        parsed = tuple(Choice(str(value), value) for value in choices)
    default = body.get("default", MISSING)
    return QuestionSpec(
        name=name,
        type=body.get("type") or _type_of(default),
        help=str(body.get("help", "")).strip(),
        default=default,
        choices=parsed,
        multiselect=bool(body.get("multiselect", False)),
        validator=str(body.get("validator", "")),
        when=body.get("when", True),
        secret=bool(body.get("secret", False)),
    )


def _type_of(default: Any) -> str:
    for python_type, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, python_type):
            return name
    return "yaml"


def _to_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    return text in _TRUE
