"""`llm_judge` speaking the protocol variants real servers have, against the real peer on
127.0.0.1 (serm.annotation.openai_peer): structured outputs (OpenAI's response_format
json_schema, vLLM's structured_outputs choice and its older guided_choice, `auto`'s fall back to
free text), Azure OpenAI (deployment URLs with api-version and the api-key header, the v1 API),
and extra headers and body fields, with the key and header secrets redacted everywhere.

The peer applies each constraint as a real server does (it validates a strict schema and answers
JSON that conforms to it; it answers a choice with one of the choices; it refuses what it does
not support with a 400), so these tests see the judge's requests from the server's side."""

import hashlib
import json
import logging

import httpx
import pandas as pd
import pytest

from serm.annotation.base import TRANSIENT
from serm.annotation.cache import agent_key
from serm.annotation.llm_judge import GRADE_SCHEMA, LLMJudge, parse_choice_answer, parse_schema_answer
from serm.annotation.openai_peer import Peer
from serm.errors import AnnotationError, PolicyError
from serm.policy import parse_policy

from tests.serm.annotation.test_llm_judge import (KEY_ENV, PAIRS, SECRET, assert_echoed_key_is_redacted, context, judge,
                                                  yaml_policy)
from tests.serm.test_secrets import assert_no_secret

HEADER_SECRET = "tok-serm-HEADER-2b8d4e6f"
HEADER_ENV = "SERM_TEST_HEADER_TOKEN"
EXPECTED = [p[-1] for p in PAIRS]
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "relevance_grade", "strict": True, "schema": {
    "type": "object", "properties": {"reason": {"type": "string"}, "grade": {"type": "integer", "enum": [0, 1, 2, 3]}},
    "required": ["reason", "grade"], "additionalProperties": False}}}


@pytest.fixture
def peer():
    with Peer(rule="overlap") as p:
        yield p


def prompt_of(request) -> str:
    return request["body"]["messages"][1]["content"]


# --------------------------------------------------------------------------- json_schema
def test_json_schema_end_to_end_through_the_votes(peer):
    j = judge(peer, samples=3, structured="json_schema")
    votes = j.vote(context())
    assert votes.groupby("doc_id")["grade"].apply(list).tolist() == [[g] * 3 for g in EXPECTED]
    assert all("query words appear" in r for r in votes["rationale"]), "the schema's reason is the rationale"
    reqs = peer.chat_requests()
    assert len(reqs) == len(PAIRS) and all(r["body"]["n"] == 3 for r in reqs)
    assert all(r["body"]["response_format"] == RESPONSE_FORMAT and r["constraint"] == "schema" for r in reqs)
    assert prompt_of(reqs[0]).endswith('{"reason": "<one short sentence>", "grade": <0, 1, 2 or 3>}')
    assert "Grade: <0, 1, 2 or 3>" not in prompt_of(reqs[0])
    assert j.report["structured"] == "json_schema" and j.report["structured_violations"] == 0


def test_the_default_sends_no_constraint(peer):
    j = judge(peer)
    assert j.vote(context(PAIRS[:1]))["grade"].tolist() == [3]
    body = peer.chat_requests()[0]["body"]
    assert not {"response_format", "structured_outputs", "guided_choice"} & set(body)
    assert prompt_of(peer.chat_requests()[0]).endswith("Grade: <0, 1, 2 or 3>")
    assert j.report["structured"] == "none"


@pytest.mark.parametrize("content, reason", [
    ('{"grade": 2}', "missing reason"),
    ('{"reason": "fine", "grade": "2"}', "not an integer 0-3"),
    ('{"reason": "fine", "grade": 2.0}', "not an integer 0-3"),
    ('{"reason": "fine", "grade": true}', "not an integer 0-3"),
    ('{"reason": "fine", "grade": 4}', "outside 0-3"),
    ('{"reason": 7, "grade": 2}', "not a string"),
    ('{"reason": "fine", "grade": 2, "confidence": 0.9}', "fields outside the schema: confidence"),
    ('```json\n{"reason": "fine", "grade": 2}\n```', "not the JSON object the json_schema asks for"),
    ("Reason: fine.\nGrade: 2", "not the JSON object the json_schema asks for"),
    ('["fine", 2]', "not the JSON object the json_schema asks for"),
])
def test_an_answer_off_the_schema_abstains_with_the_reason(peer, content, reason, caplog):
    """The server did not apply the schema (the peer's `content` fault plays one that ignores
    it): strict mode reads nothing into the answer."""
    peer.fault(content=content, match="Paris")
    j = judge(peer, structured="json_schema")
    votes = j.vote(context(PAIRS[:2]))
    bad, good = votes.iloc[0], votes.iloc[1]
    assert pd.isna(bad["grade"]) and reason in bad["rationale"], bad["rationale"]
    assert not bad["rationale"].startswith(TRANSIENT)
    assert good["grade"] == 0
    assert j.report["structured_violations"] == 1 and j.report["abstentions"] == 1
    assert "broke the `structured: json_schema` constraint" in caplog.text and "apply response_format" in caplog.text


def test_a_cut_structured_answer_says_so_and_is_no_violation(peer):
    peer.fault(body=json.dumps({"choices": [{"index": 0, "finish_reason": "length",
                                             "message": {"role": "assistant", "content": '{"reason": "the pas'}}]}))
    j = judge(peer, structured="json_schema", max_tokens=6)
    votes = j.vote(context(PAIRS[:1]))
    assert pd.isna(votes["grade"].iloc[0]) and "cut at max_tokens=6" in votes["rationale"].iloc[0]
    assert j.report["structured_violations"] == 0


def test_the_schema_parser_on_its_own():
    assert parse_schema_answer('{"reason": "on topic", "grade": 3}') == (3, "on topic")
    assert parse_schema_answer(' {"grade": 0, "reason": ""} ') == (0, "grade 0 (no reason given)")
    assert parse_schema_answer("<think>maybe 3</think>{\"reason\": \"r\", \"grade\": 1}") == (1, "r")
    assert parse_schema_answer("")[0] is None


# --------------------------------------------------------------------------- choices
def test_choice_sends_vllm_structured_outputs_and_reads_a_digit(peer):
    j = judge(peer, samples=2, structured="choice")
    votes = j.vote(context())
    assert votes.groupby("doc_id")["grade"].apply(list).tolist() == [[g] * 2 for g in EXPECTED]
    assert votes["rationale"].iloc[0] == "guided choice 3 (a constrained answer carries no reason)"
    body = peer.chat_requests()[0]["body"]
    assert body["structured_outputs"] == {"choice": ["0", "1", "2", "3"]}
    assert "response_format" not in body and "guided_choice" not in body
    assert prompt_of(peer.chat_requests()[0]).endswith("Answer with the grade alone: 0, 1, 2 or 3.")
    assert all(r["constraint"] == "choice" for r in peer.chat_requests())


def test_guided_choice_speaks_to_a_vllm_before_0_12():
    with Peer(choice_field="guided_choice") as peer:
        votes = judge(peer, structured="guided_choice").vote(context())
        body = peer.chat_requests()[0]["body"]
    assert votes["grade"].tolist() == EXPECTED
    assert body["guided_choice"] == ["0", "1", "2", "3"] and "structured_outputs" not in body


def test_a_server_that_ignores_the_choice_field_is_caught_not_guessed(caplog):
    """vLLM ignores request fields it does not know: a choice it never applied comes back as
    free text, and every such answer abstains, counted, with a hint about the other field."""
    with Peer(choice_field="guided_choice") as peer:
        j = judge(peer, structured="choice")
        votes = j.vote(context())
    assert votes["grade"].isna().all()
    assert all(r.startswith("abstain: not one of the choices 0, 1, 2, 3") for r in votes["rationale"])
    assert j.report["structured_violations"] == len(PAIRS)
    assert "`structured: guided_choice`" in caplog.text


@pytest.mark.parametrize("content", ["2.", "Grade: 2", "two", "4", "23"])
def test_a_choice_answer_that_is_not_a_choice_abstains(peer, content):
    peer.fault(content=content, match="Paris")
    votes = judge(peer, structured="choice").vote(context(PAIRS[:2]))
    assert pd.isna(votes["grade"].iloc[0]) and "not one of the choices" in votes["rationale"].iloc[0]
    assert votes["grade"].iloc[1] == 0


def test_the_choice_parser_on_its_own():
    assert parse_choice_answer(" 2\n")[0] == 2
    assert parse_choice_answer("<think>3 or 2</think>1")[0] == 1
    assert parse_choice_answer("")[1] == "abstain: empty answer"


# --------------------------------------------------------------------------- refusals and auto
def test_a_server_without_response_format_is_a_clear_error():
    with Peer(response_format=False) as peer, pytest.raises(AnnotationError) as exc:
        judge(peer, structured="json_schema", concurrency=1).vote(context())
    msg = str(exc.value)
    assert "refused `structured: json_schema`" in msg and "HTTP 400" in msg and "response_format" in msg
    assert "`structured: auto`" in msg and "`structured: none`" in msg
    # The first refusal stops the agent (every request would fail alike): the one worker may have
    # taken the next pair before the stop reached it, no more.
    assert len(peer.chat_requests()) <= 2


@pytest.mark.parametrize("mode, message, hint", [
    ("choice", "Unrecognized field: structured_outputs", "`structured: guided_choice`"),
    ("guided_choice", "guided_choice is not supported", "`structured: choice`"),
])
def test_a_refused_choice_says_which_structured_value_to_try(peer, mode, message, hint):
    peer.fault(status=400, message=message, times=99)
    with pytest.raises(AnnotationError, match=f"refused `structured: {mode}`") as exc:
        judge(peer, structured=mode).vote(context())
    assert hint in str(exc.value)


def test_auto_falls_back_to_free_text_once(caplog):
    with Peer(response_format=False) as peer:
        j = judge(peer, samples=3, structured="auto", concurrency=1)
        votes = j.vote(context())
        reqs = peer.chat_requests()
    assert votes.groupby("doc_id")["grade"].apply(list).tolist() == [[g] * 3 for g in EXPECTED]
    assert "response_format" in reqs[0]["body"] and prompt_of(reqs[0]).endswith("<0, 1, 2 or 3>}")
    assert len(reqs) == len(PAIRS) + 1, "one refused request, then one free-text request per pair"
    assert all("response_format" not in r["body"] and prompt_of(r).endswith("Grade: <0, 1, 2 or 3>") for r in reqs[1:])
    assert j.report["structured_fallback"] is True and j.report["structured"] == "none"
    assert j.report["request_abstentions"] == 0
    assert caplog.text.count("`structured: auto` asks in free text") == 1


def test_auto_keeps_json_schema_where_the_server_takes_it(peer):
    j = judge(peer, structured="auto")
    assert j.vote(context())["grade"].tolist() == EXPECTED
    assert all(r["body"]["response_format"] == RESPONSE_FORMAT for r in peer.chat_requests())
    assert j.report["structured_fallback"] is False and j.report["structured"] == "auto"


def test_auto_reads_an_unconstrained_answer_as_free_text(peer):
    """A server that ignores response_format without a word: `auto` reads its answers as strictly
    as free text is read, and counts them."""
    peer.fault(content="Reason: on topic.\nGrade: 2", times=99)
    j = judge(peer, structured="auto")
    votes = j.vote(context(PAIRS[:2]))
    assert votes["grade"].tolist() == [2, 2] and j.report["structured_violations"] == 2


def test_a_400_about_the_pair_is_still_an_abstention_in_structured_mode(peer):
    peer.fault(status=400, match="Hamlet", times=99, message="context length exceeded")
    j = judge(peer, structured="json_schema")
    votes = j.vote(context(PAIRS[:3])).set_index("doc_id")
    assert pd.isna(votes.loc["d3", "grade"]) and "context length exceeded" in votes.loc["d3", "rationale"]
    assert j.report["request_abstentions"] == 1


# --------------------------------------------------------------------------- the peer as a protocol peer
def post(peer, body, path="/v1/chat/completions", headers=None):
    return httpx.post(peer.base + path, json=body, headers=headers or {}, timeout=5)


def chat(**extra):
    return {"model": "m", "messages": [{"role": "user", "content": "<query>capital city of France</query>"
                                                                   "<passage>Paris is the capital city of France."
                                                                   "</passage>"}], **extra}


def test_the_peer_validates_a_strict_schema_and_answers_one_that_conforms(peer):
    open_object = {"type": "object", "properties": {"grade": {"type": "integer"}}}
    loose = {"type": "json_schema", "json_schema": {"name": "g", "strict": True, "schema": open_object}}
    r = post(peer, chat(response_format=loose))
    assert r.status_code == 400 and "additionalProperties" in r.json()["error"]["message"]
    r = post(peer, chat(response_format={"type": "json_schema", "json_schema": {"schema": GRADE_SCHEMA}}))
    assert r.status_code == 400 and "name" in r.json()["error"]["message"]
    other = {"type": "object", "properties": {"verdict": {"type": "string"}, "score": {"type": "integer"},
                                              "relevant": {"type": "boolean"}},
             "required": ["verdict", "score", "relevant"], "additionalProperties": False}
    r = post(peer, chat(response_format={"type": "json_schema", "json_schema": {"name": "o", "strict": True,
                                                                                "schema": other}}))
    answer = json.loads(r.json()["choices"][0]["message"]["content"])
    assert answer == {"verdict": "3 of 3 query words appear in the passage", "score": 3, "relevant": True}
    # llama.cpp's form: the schema beside the type
    r = post(peer, chat(response_format={"type": "json_schema", "schema": GRADE_SCHEMA}))
    assert json.loads(r.json()["choices"][0]["message"]["content"])["grade"] == 3


def test_the_peer_refuses_two_constraints_and_bad_choices(peer):
    r = post(peer, chat(response_format=RESPONSE_FORMAT, structured_outputs={"choice": ["0", "1"]}))
    assert r.status_code == 400 and "only use one kind" in r.json()["error"]["message"]
    r = post(peer, chat(structured_outputs={"choice": []}))
    assert r.status_code == 400
    r = post(peer, chat(structured_outputs={"choice": ["no", "yes"]}))
    assert r.json()["choices"][0]["message"]["content"] == "no", "a grade outside the choices: the first choice"


# --------------------------------------------------------------------------- Azure OpenAI
@pytest.fixture
def azure(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with Peer(api_key=SECRET, auth="api-key", api_version="2024-10-21", deployments=["gpt-4o-mini"]) as p:
        yield p


def azure_judge(peer, **params):
    return judge(peer, **{"endpoint": f"{peer.base}/openai/deployments/gpt-4o-mini", "model": "gpt-4o-mini",
                          "api_version": "2024-10-21", "auth": "api-key", "api_key_env": KEY_ENV, **params})


def test_azure_deployment_url_with_api_version_and_the_api_key_header(azure):
    j = azure_judge(azure, structured="json_schema")
    assert j.vote(context())["grade"].tolist() == EXPECTED
    reqs = azure.chat_requests()
    assert all(r["path"] == "/openai/deployments/gpt-4o-mini/chat/completions" for r in reqs)
    assert all(r["query"] == {"api-version": "2024-10-21"} for r in reqs)
    assert all(r["headers"]["api-key"] == SECRET and "authorization" not in r["headers"] for r in reqs)
    assert all(r["body"]["response_format"] == RESPONSE_FORMAT for r in reqs)


def test_azure_v1_api_is_an_openai_style_endpoint(azure):
    j = judge(azure, endpoint=f"{azure.base}/openai/v1", model="gpt-4o-mini", auth="api-key", api_key_env=KEY_ENV)
    assert j.vote(context(PAIRS[:2]))["grade"].tolist() == [3, 0]
    req = azure.chat_requests()[0]
    assert req["path"] == "/openai/v1/chat/completions" and req["query"] == {}
    assert req["body"]["model"] == "gpt-4o-mini" and req["headers"]["api-key"] == SECRET


def test_azure_keys_are_redacted_everywhere(azure, capfd, caplog, tmp_path):
    assert_echoed_key_is_redacted(azure, lambda **kw: azure_judge(azure, **kw), capfd, caplog, tmp_path)


def test_azure_refusals_name_the_fix(azure):
    with pytest.raises(AnnotationError) as exc:   # the key sent as Bearer: Azure wants api-key
        azure_judge(azure, auth="bearer").vote(context(PAIRS[:1]))
    assert "HTTP 401" in str(exc.value) and "`auth: api-key`" in str(exc.value) and SECRET not in str(exc.value)
    with pytest.raises(AnnotationError) as exc:   # the deployment does not exist
        judge(azure, endpoint=f"{azure.base}/openai/deployments/gpt-5", api_version="2024-10-21",
              auth="api-key", api_key_env=KEY_ENV).vote(context(PAIRS[:1]))
    assert "HTTP 404" in str(exc.value) and "openai/deployments/DEPLOYMENT" in str(exc.value)
    with pytest.raises(AnnotationError, match="api_version 2024-08-01-preview"):   # json_schema on an old version
        with Peer(api_version="2024-06-01") as old:
            judge(old, endpoint=f"{old.base}/openai/deployments/d", api_version="2024-06-01",
                  structured="json_schema").vote(context(PAIRS[:1]))


def test_the_azure_peer_wants_its_api_version(azure):
    r = post(azure, chat(), "/openai/deployments/gpt-4o-mini/chat/completions", {"api-key": SECRET})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Resource not found"
    r = post(azure, chat(), "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2099-01-01",
             {"api-key": SECRET})
    assert r.status_code == 400


@pytest.mark.parametrize("params, message", [
    ({"endpoint": "https://r.openai.azure.com/openai/deployments/gpt-4o-mini"}, "needs api_version"),
    ({"endpoint": "https://r.openai.azure.com/openai/deployments/d?api-version=2024-10-21"},
     "api-version goes in `api_version`"),
    ({"api_version": "2024-10-21&x=1"}, "api_version must be a version name"),
    ({"auth": "basic"}, "bearer"),
    ({"structured": "grammar"}, "json_schema"),
])
def test_bad_azure_and_structured_params_are_refused(params, message):
    with pytest.raises(PolicyError) as exc:
        parse_policy(yaml_policy([{"name": "llm_judge", "model": "m", **params}]), "p.yaml")
    assert message in str(exc.value)


# --------------------------------------------------------------------------- extra headers and body
def test_extra_headers_and_body_reach_the_server(peer, monkeypatch):
    monkeypatch.setenv(HEADER_ENV, HEADER_SECRET)
    j = judge(peer, structured="json_schema",
              extra_headers={"X-Trace-Id": "serm-round-7", "X-Auth-Token": f"Bearer ${{{HEADER_ENV}}}"},
              extra_body={"top_p": 0.9, "chat_template_kwargs": {"enable_thinking": False}})
    assert j.vote(context())["grade"].tolist() == EXPECTED
    for r in peer.chat_requests():
        assert r["headers"]["x-trace-id"] == "serm-round-7"
        assert r["headers"]["x-auth-token"] == f"Bearer {HEADER_SECRET}"
        assert r["body"]["top_p"] == 0.9 and r["body"]["chat_template_kwargs"] == {"enable_thinking": False}
        assert r["body"]["response_format"] == RESPONSE_FORMAT and r["body"]["model"] == "judge-a"
    assert "${" + HEADER_ENV + "}" in str(j.params), "the policy keeps the variable's name, never its value"


def test_secret_header_values_are_redacted_everywhere(peer, monkeypatch, capfd, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(HEADER_ENV, HEADER_SECRET)
    peer.fault(status=503, echo_auth=True, match="Hamlet", times=99)
    peer.fault(echo_headers=True, match="Bread")
    j = judge(peer, max_retries=1, extra_headers={"Authorization": f"Bearer ${{{HEADER_ENV}}}"})
    votes = j.vote(context())
    assert all(r["headers"]["authorization"] == f"Bearer {HEADER_SECRET}" for r in peer.chat_requests())
    assert "[redacted]" in votes.set_index("doc_id").loc["d3", "rationale"]
    votes.to_parquet(tmp_path / "votes.parquet")
    (tmp_path / "report.json").write_text(json.dumps(j.report, default=str))
    out, err = capfd.readouterr()
    assert_no_secret([tmp_path], HEADER_SECRET, [votes.to_csv(), str(j), repr(j.params), caplog.text, out, err])


def test_a_header_variable_that_is_not_set_stops_before_any_request(peer, monkeypatch):
    monkeypatch.delenv(HEADER_ENV, raising=False)
    with pytest.raises(AnnotationError, match=f"X-Auth-Token names the environment variable {HEADER_ENV}"):
        judge(peer, extra_headers={"X-Auth-Token": f"${{{HEADER_ENV}}}"}).vote(context())
    assert peer.chat_requests() == []


@pytest.mark.parametrize("params, message", [
    ({"api_key_env": KEY_ENV, "extra_headers": {"Authorization": "Bearer ${OTHER}"}},
     "extra_headers.Authorization would replace or double the API key"),
    ({"api_key_env": KEY_ENV, "auth": "api-key", "extra_headers": {"API-Key": "${OTHER}"}},
     "extra_headers.API-Key would replace or double the API key"),
    ({"extra_headers": {"X-Api-Key": SECRET}}, "extra_headers.X-Api-Key looks like a credential but holds a literal"),
    ({"extra_headers": {"Authorization": f"Bearer {SECRET}"}}, "extra_headers.Authorization looks like a credential"),
    ({"extra_headers": {"Content-Type": "text/plain"}}, "extra_headers.Content-Type: the client writes this header"),
    ({"extra_headers": {"X-A": "${1BAD}"}}, "extra_headers.X-A: a malformed ${...} reference"),
    ({"extra_headers": {"Bad Name": "x"}}, "is not a valid HTTP header name"),
    ({"extra_body": {"messages": []}}, "extra_body.messages: the judge writes this field itself; set it with `prompt`"),
    ({"extra_body": {"n": 5}}, "extra_body.n: the judge writes this field itself"),
    ({"extra_body": {"stream": True}}, "extra_body.stream: the judge writes this field itself; remove it"),
    ({"structured": "json_schema", "extra_body": {"response_format": {"type": "json_object"}}},
     "extra_body.response_format: `structured: json_schema` writes the answer's constraint"),
    ({"structured": "choice", "extra_body": {"guided_choice": ["a"]}}, "extra_body.guided_choice"),
    ({"structured": "choice", "prompt": "{query} {passage}"}, None),   # a constrained prompt need not name Grade: N
])
def test_extra_headers_and_body_are_checked_when_the_policy_loads(params, message):
    raw = yaml_policy([{"name": "llm_judge", "model": "m", **params}])
    if message is None:
        parse_policy(raw, "p.yaml")
        return
    with pytest.raises(PolicyError) as exc:
        parse_policy(raw, "p.yaml")
    assert message in str(exc.value) and SECRET not in str(exc.value)


def test_own_constraint_fields_may_go_in_extra_body_in_free_text_mode(peer):
    j = judge(peer, extra_body={"response_format": {"type": "json_object"}})
    assert j.vote(context(PAIRS[:2]))["grade"].tolist() == [3, 0]
    assert peer.chat_requests()[0]["body"]["response_format"] == {"type": "json_object"}


def test_an_azure_jury_member_with_extras_loads_from_a_policy():
    entry = {"name": "llm_judge", "endpoint": "https://serm-test.openai.azure.com/openai/deployments/gpt-4o-mini",
             "model": "gpt-4o-mini", "api_version": "2024-10-21", "auth": "api-key",
             "api_key_env": "AZURE_OPENAI_API_KEY", "structured": "json_schema",
             "extra_headers": {"x-ms-client-request-id": "serm"}, "extra_body": {"top_p": 0.9}}
    policy = parse_policy(yaml_policy([entry]), "azure.yaml")
    spec = [a for a in policy.annotation.agents if a.name == "llm_judge"][0]
    assert spec.params()["auth"] == "api-key" and spec.params()["structured"] == "json_schema"


# --------------------------------------------------------------------------- the vote cache
def test_the_new_params_keep_old_cache_keys_at_their_defaults():
    """A policy written before these parameters keeps the vote cache key it had: the new ones
    that may change a grade enter the key only when set; auth and api_version never do."""
    old_ignore = {"timeout_s", "max_retries", "backoff_s", "max_backoff_s", "concurrency", "requests_per_second",
                  "api_key_env", "use_n", "price_per_1k_prompt_tokens", "price_per_1k_completion_tokens"}
    new = {"structured", "extra_headers", "extra_body", "auth", "api_version"}
    j = LLMJudge(model="m", samples=2)
    params = {k: v for k, v in j.params.model_dump(mode="json").items() if k not in old_ignore | new}
    blob = json.dumps({"agent": "llm_judge", "params": params, "token": ""}, sort_keys=True, default=str)
    assert agent_key(j) == f"llm_judge:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
    assert agent_key(j) == agent_key(LLMJudge(model="m", samples=2, auth="api-key", api_version="2024-10-21"))
    for changed in ({"structured": "json_schema"}, {"structured": "auto"}, {"extra_body": {"top_p": 0.5}},
                    {"extra_headers": {"X-Route": "b"}}):
        assert agent_key(LLMJudge(model="m", samples=2, **changed)) != agent_key(j), changed
