"""The question specs read from copier.yml: defaults, validators, casting, order."""

from __future__ import annotations

from typing import Any

import pytest

from scaffold.errors import AnswerError
from scaffold.questions import MISSING, Questionnaire
from scaffold.render import template_root


@pytest.fixture(scope="module")
def questions() -> Questionnaire:
    return Questionnaire.from_copier_yml(template_root() / "copier.yml")


def answer(questions: Questionnaire, **data: Any) -> dict[str, Any]:
    return questions.resolve({"api_key_hash": "", **data})


def test_every_asked_question_has_help(questions: Questionnaire) -> None:
    for spec in questions:
        if not spec.computed:
            assert len(spec.help) > 20, f"{spec.name} needs a helpful help text"


def test_questions_come_in_the_order_of_copier_yml(questions: Questionnaire) -> None:
    assert questions.names[:5] == [
        "project_name",
        "project_slug",
        "deployment",
        "domain",
        "hub_url",
    ]


def test_role_choices_match_the_role_catalog(questions: Questionnaire) -> None:
    catalog = questions.default(questions["role_catalog"], {})
    choices = [choice.value for choice in questions["worker_roles"].choices]
    assert choices == list(catalog)
    for name, role in catalog.items():
        assert role["capabilities"], name
        assert name in role["capabilities"], "a role's own name is one of its capability tags"
        for title in (c.title for c in questions["worker_roles"].choices if c.value == name):
            assert all(tag in title for tag in role["capabilities"])


def test_defaults_make_a_local_project(questions: Questionnaire) -> None:
    context = answer(questions)
    assert context["deployment"] == "local"
    assert context["hub_url"] == "http://127.0.0.1:5555"
    assert context["hub_port"] == 5555
    assert context["hub_listen_host"] == "127.0.0.1"
    assert context["worker_roles"] == ["backend", "frontend", "testing"]
    assert context["worker_count"] == 3
    assert context["workspace_path"].startswith("~/")


def test_slug_is_derived_from_the_name(questions: Questionnaire) -> None:
    context = answer(questions, project_name="Acme's Very Long Project Name, Inc.")
    assert context["project_slug"] == "acme-s-very-long-project"
    assert len(context["project_slug"]) <= 24


def test_remote_with_domain_serves_tls_through_loopback(questions: Questionnaire) -> None:
    context = answer(questions, deployment="remote", domain="hub.example.com")
    assert context["hub_url"] == "https://hub.example.com"
    assert (context["hub_listen_host"], context["hub_port"]) == ("127.0.0.1", 5555)
    assert context["workspace_path"] == "/srv/agent-team/workspace"
    assert context["data_dir"] == "/srv/agent-team/hub-data"


def test_remote_plain_listens_on_the_urls_port(questions: Questionnaire) -> None:
    context = answer(questions, deployment="remote", hub_url="http://203.0.113.10:8080")
    assert (context["hub_listen_host"], context["hub_port"]) == ("0.0.0.0", 8080)  # noqa: S104


def test_remote_without_domain_has_no_guessable_url(questions: Questionnaire) -> None:
    assert questions.default(questions["hub_url"], {"deployment": "remote", "domain": ""}) is MISSING
    with pytest.raises(AnswerError, match="hub_url: an answer is required"):
        answer(questions, deployment="remote")


def test_computed_values_are_not_recorded(questions: Questionnaire) -> None:
    recorded = questions.recorded(answer(questions))
    assert not {"role_catalog", "hub_port", "hub_listen_host", "data_dir", "domain", "running_roles"} & set(
        recorded
    )
    assert recorded["api_key_hash"] == ""


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("hub_port", "hub_port: computed from domain and hub_url, not a question; answer those instead"),
        ("hub_listen_host", "hub_listen_host: computed from deployment and domain, not a question;"),
        ("data_dir", "data_dir: computed from workspace_path, not a question; answer that instead"),
        ("stop_wait_seconds", "stop_wait_seconds: computed from idle_timeout_minutes, not a question;"),
        ("running_roles", "running_roles: computed from worker_count and worker_roles, not a question;"),
        (
            "role_catalog",
            "role_catalog: fixed by the template, not a question (the roles and the capability "
            "tags of each; choose among them with worker_roles)",
        ),
    ],
)
def test_a_computed_name_is_refused_saying_what_it_comes_from(
    questions: Questionnaire, name: str, message: str
) -> None:
    assert questions[name].computed
    with pytest.raises(AnswerError) as raised:
        answer(questions, **{name: "8080"})
    assert str(raised.value).startswith(message)


def test_every_computed_name_is_refused(questions: Questionnaire) -> None:
    for spec in questions:
        if spec.computed:
            with pytest.raises(AnswerError, match=f"^{spec.name}: (computed from|fixed by the template)"):
                answer(questions, **{spec.name: "1"})


class Asked(Exception):
    """A prompt was reached."""


def never_ask(spec: Any, default: Any, context: Any) -> Any:
    raise Asked(spec.name)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"worker_count": "99"}, "worker_count: Choose between 1 and 32 workers."),
        ({"worker_roles": "[backend, qa]"}, "worker_roles: 'qa' is not one of"),
        ({"idle_timeout_minutes": "soon"}, "idle_timeout_minutes: expected a whole number"),
        ({"hub_port": "80"}, "hub_port: computed from"),
        # hub_url's validator reads domain, known without a prompt: local has no domain.
        ({"deployment": "local", "hub_url": "https://hub.example.com"}, "hub_url: An https URL needs"),
        ({"idle_timeout_minutes": "0"}, "idle_timeout_minutes: Choose between 1 and 240 minutes."),
        ({"project_name": "x" * 61, "worker_count": "2"}, "project_name: Keep the name to 60 characters"),
    ],
)
def test_given_answers_are_checked_before_the_first_prompt(
    questions: Questionnaire, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(AnswerError) as raised:
        questions.resolve({"api_key_hash": "", **data}, ask=never_ask)
    assert str(raised.value).startswith(message)


def test_an_answer_that_depends_on_a_prompt_is_checked_after_it(questions: Questionnaire) -> None:
    """hub_url=https://... is right or wrong depending on the domain, which is still to be asked."""
    prompted: list[str] = []

    def ask(spec: Any, default: Any, context: Any) -> Any:
        prompted.append(spec.name)
        given = {"deployment": "remote", "domain": "hub.example.com"}.get(spec.name, default)
        return questions.check(spec, given, context)

    context = questions.resolve({"api_key_hash": "", "hub_url": "https://hub.example.com"}, ask=ask)
    assert context["hub_url"] == "https://hub.example.com" and "domain" in prompted
    with pytest.raises(AnswerError, match=r"must be https://hub\.example\.com"):
        questions.resolve({"api_key_hash": "", "hub_url": "https://other.example.com"}, ask=ask)


def test_running_roles_are_the_roles_some_worker_takes(questions: Questionnaire) -> None:
    assert answer(questions, worker_count="2")["running_roles"] == ["backend", "frontend"]
    assert answer(questions, worker_count="3")["running_roles"] == ["backend", "frontend", "testing"]
    assert answer(questions, worker_count="7", worker_roles="[docs]")["running_roles"] == ["docs"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"project_name": ""}, "without leading or trailing spaces"),
        ({"project_name": " padded"}, "without leading or trailing spaces"),
        ({"project_name": 'say "hi"'}, "double quotes"),
        ({"project_name": "x" * 61}, "60 characters"),
        ({"project_slug": "Caps"}, "lowercase letters"),
        ({"project_slug": "a"}, "2-24 characters"),
        ({"project_slug": "ends-"}, "not ending with a dash"),
        ({"project_slug": "x" * 25}, "2-24 characters"),
        ({"deployment": "cloud"}, "'cloud' is not one of: local, remote"),
        ({"deployment": "remote", "domain": "Not A Domain"}, "lowercase domain name"),
        ({"hub_url": "ftp://host"}, "http(s)://host[:port]"),
        ({"hub_url": "http://host:5555/api"}, "with no path"),
        ({"hub_url": "http://host:99999"}, "between 1 and 65535"),
        ({"hub_url": "https://host"}, "needs the TLS domain"),
        (
            {
                "deployment": "remote",
                "domain": "hub.example.com",
                "hub_url": "https://other.example.com",
            },
            "must be https://hub.example.com",
        ),
        ({"api_key_hash": "abc"}, "64 lowercase hex"),
        ({"api_key_hash": "G" * 64}, "64 lowercase hex"),
        ({"worker_count": "0"}, "between 1 and 32"),
        ({"worker_count": "33"}, "between 1 and 32"),
        ({"worker_count": "three"}, "expected a whole number"),
        ({"worker_roles": "[]"}, "at least one role"),
        ({"worker_roles": "[backend, wizardry]"}, "'wizardry' is not one of"),
        ({"worker_roles": "backend: x"}, "expected a list"),
        ({"idle_timeout_minutes": "0"}, "between 1 and 240"),
        ({"workspace_path": "relative/path"}, "absolute path"),
        ({"workspace_path": "/srv/../etc"}, ". or .. segments"),
        ({"workspace_path": "/srv/with space"}, "absolute path"),
        (
            {"deployment": "remote", "domain": "hub.example.com", "workspace_path": "~/code"},
            "On a server",
        ),
        ({"no_such_question": "1"}, "no such question"),
    ],
)
def test_invalid_answers_fail_with_the_validators_message(
    questions: Questionnaire, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(AnswerError) as raised:
        answer(questions, **data)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"{list(data)[-1]}: ")


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        ({"worker_count": "32"}, "worker_count", 32),
        ({"worker_roles": "[testing, backend, testing]"}, "worker_roles", ["backend", "testing"]),
        ({"worker_roles": ["docs"]}, "worker_roles", ["docs"]),
        ({"hub_url": "http://[::1]:5555"}, "hub_port", 5555),
        ({"hub_url": "http://localhost"}, "hub_port", 80),
        ({"project_name": "Équipe d'agents"}, "project_slug", "quipe-d-agents"),
    ],
)
def test_valid_answers_are_cast_like_copier_does(
    questions: Questionnaire, data: dict[str, Any], name: str, expected: Any
) -> None:
    assert answer(questions, **data)[name] == expected
