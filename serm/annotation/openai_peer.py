"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for tests and local trials.

It is not a judge: it grades by a deterministic rule (`overlap`: the share of the query's words
found in the passage, both parsed back out of the prompt; `constant:N`; a table of known
(query, title) pairs; or any function), answers in the `Reason: ... / Grade: N` format (or
JSON), and can be scripted with faults — 429s with Retry-After, 5xx, slow answers, dropped
connections, malformed or wrong content — so a client meets what real servers do. It records
every request (headers and query included) and the most requests it had in flight at once.

Structured outputs as real servers take them: `response_format` `json_schema` (OpenAI's form,
`{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}`, or llama.cpp's with
`schema` beside `type`) is validated as OpenAI validates a strict schema (a name; every object
closed by `additionalProperties: false` and requiring all its properties) and answered with
JSON that conforms to it; `json_object` with JSON; vLLM's `structured_outputs: {"choice": [...]}`
(or, with `choice_field="guided_choice"`, the pre-v0.12 `guided_choice: [...]`) with one of the
choices — the other field is ignored, as vLLM ignores fields it does not know.
`response_format=False` plays a server without structured outputs: a request with
`response_format` gets a 400 naming it.

Azure OpenAI (`api_version="2024-10-21"`, `auth="api-key"`): it serves
`/openai/deployments/{deployment}/chat/completions?api-version=...` (a missing api-version is a
404 "Resource not found", an unknown one a 400; json_schema needs 2024-08-01-preview or later)
and the v1 API's `/openai/v1/chat/completions`, and checks the `api-key` header.

    python -m serm.annotation.openai_peer --port 0 --rule overlap   # prints the port, serves

In-process::

    with Peer(rule="overlap") as peer:
        peer.fault(status=429, retry_after="1")          # the next request gets a 429
        peer.fault(drop=True, match="Paris")             # the next request whose prompt names Paris
        ...  # point an llm_judge at peer.url
        peer.chat_requests()[0]["headers"]["authorization"]

    with Peer(api_key=KEY, auth="api-key", api_version="2024-10-21", deployments=["gpt-4o-mini"]) as azure:
        ...  # endpoint: f"{azure.base}/openai/deployments/gpt-4o-mini", api_version: 2024-10-21

Standard library only: it must start fast as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# The innermost fenced block: a rubric may name the tags ("text inside <query> ...") before them.
_QUERY = re.compile(r"<query>((?:(?!<query>).)*?)</query>", re.DOTALL | re.IGNORECASE)
_PASSAGE = re.compile(r"<passage[^>]*>((?:(?!<passage).)*?)</passage>", re.DOTALL | re.IGNORECASE)
_QUERY_LINE = re.compile(r"^\s*query\s*:\s*(.+)$", re.MULTILINE | re.IGNORECASE)
_PASSAGE_LINE = re.compile(r"^\s*passage\s*:\s*(.+)$", re.MULTILINE | re.IGNORECASE)
_TITLE = re.compile(r"^\s*Title:\s*(.*)$", re.MULTILINE)
_WORD = re.compile(r"\w+", re.UNICODE)
# The longest an `in_flight` fault holds an answer: a client that never gets there fails, not hangs.
HOLD_S = 4.0

FAULT_KEYS = {"match", "model", "in_flight", "times", "status", "retry_after", "retry_after_ms", "message",
              "delay_s", "drop", "content", "grade", "grades", "body", "choices", "echo_auth", "echo_headers",
              "no_usage"}
AUTH_SCHEMES = ("bearer", "api-key")
CHOICE_FIELDS = ("structured_outputs", "guided_choice")
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
# The first Azure OpenAI api-version that takes response_format json_schema.
AZURE_JSON_SCHEMA_SINCE = "2024-08-01"


class ProtocolError(Exception):
    """A request the peer refuses with HTTP 400, as a real server would: `message` says why."""


def check_strict_schema(schema, where: str = "()") -> None:
    """Raise ProtocolError where `schema` breaks OpenAI's rules for a strict json_schema: every
    object lists its properties, requires all of them and sets additionalProperties to false."""
    if not isinstance(schema, dict):
        raise ProtocolError(f"In context={where}, schema must be a JSON Schema object")
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, dict):
            raise ProtocolError(f"In context={where}, an object schema must list its 'properties'")
        if schema.get("additionalProperties") is not False:
            raise ProtocolError(f"In context={where}, 'additionalProperties' is required to be supplied and to be "
                                f"false")
        required = schema.get("required")
        if not isinstance(required, list) or set(required) != set(props):
            raise ProtocolError(f"In context={where}, 'required' is required to be supplied and to be an array "
                                f"including every key in properties")
        for name, sub in props.items():
            check_strict_schema(sub, f"({where[1:-1]}{', ' if where != '()' else ''}'properties', '{name}')")
    if schema.get("type") == "array" and "items" in schema:
        check_strict_schema(schema["items"], f"({where[1:-1]}, 'items')")


def schema_instance(schema: dict, grade: int, reason: str):
    """A value that conforms to `schema`, carrying the peer's grade in its integer (or enum) fields
    and its reason in its string fields: what a constrained decoder of a model that agrees with
    the peer would write."""
    if "enum" in schema:
        options = schema["enum"]
        return grade if grade in options else (str(grade) if str(grade) in options else options[0])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: schema_instance(sub, grade, reason) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [schema_instance(schema.get("items", {}), grade, reason)]
    if kind == "integer":
        return grade
    if kind == "number":
        return float(grade)
    if kind == "boolean":
        return grade >= 2
    if kind == "null":
        return None
    return reason


def overlap_grade(query: str, passage: str, thresholds=(0.25, 0.5, 0.75)) -> tuple[int, str]:
    """Share of the query's distinct words (3+ characters) that appear in the passage → 0-3."""
    q = {w for w in _WORD.findall(query.lower()) if len(w) >= 3} or set(_WORD.findall(query.lower()))
    p = set(_WORD.findall(passage.lower()))
    hits = len(q & p)
    share = hits / len(q) if q else 0.0
    return int(sum(share >= t for t in thresholds)), f"{hits} of {len(q)} query words appear in the passage"


class Peer:
    """The server. `rule`: "overlap", "constant:N", a callable (query, passage) -> grade, with
    `table` {(query, title): grade} consulted first. `api_key`: require it (401 otherwise) in
    `Authorization: Bearer <key>` (`auth="bearer"`) or `api-key: <key>` (`auth="api-key"`).
    `models`: the served model names (404 for others; None serves any name and echoes it).
    `supports_n=False` answers one choice whatever `n` asks (as some servers do).
    `response_format=False`: refuse response_format with a 400; `choice_field`: the vLLM field
    whose choices it honours ("structured_outputs", "guided_choice", None: neither).
    `api_version`: serve Azure OpenAI's routes, requiring that api-version on the deployment
    route; `deployments`: their names (None: any)."""

    def __init__(self, rule="overlap", *, table=None, host="127.0.0.1", port=0, api_key=None, models=None,
                 supports_n=True, style="line", delay_s=0.0, thresholds=(0.25, 0.5, 0.75), auth="bearer",
                 response_format=True, choice_field="structured_outputs", api_version=None, deployments=None):
        if style not in ("line", "json"):
            raise ValueError("style must be 'line' or 'json'")
        if auth not in AUTH_SCHEMES:
            raise ValueError(f"auth must be one of {AUTH_SCHEMES}")
        if choice_field is not None and choice_field not in CHOICE_FIELDS:
            raise ValueError(f"choice_field must be one of {CHOICE_FIELDS} or None")
        self.rule, self.table, self.style = rule, dict(table or {}), style
        self.host, self.port, self.api_key, self.models = host, port, api_key, models
        self.supports_n, self.delay_s, self.thresholds = supports_n, delay_s, tuple(thresholds)
        self.auth, self.response_format, self.choice_field = auth, response_format, choice_field
        self.api_version, self.deployments = api_version, deployments
        self.requests: list[dict] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: list[dict] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)   # in-flight count changed (or stopping)
        self._stopping = threading.Event()
        self._server = None
        self._thread = None
        self._ids = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Peer:
        peer = self

        class Handler(_Handler):
            pass

        Handler.peer = peer
        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-peer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()   # wakes handlers sleeping in a slow-response fault
        with self._changed:
            self._changed.notify_all()   # and those holding for `in_flight`
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Peer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base(self) -> str:
        """`http://host:port`: the root Azure OpenAI's routes hang from (`/openai/...`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base an OpenAI client takes (`.../v1`)."""
        return f"{self.base}/v1"

    # ------------------------------------------------------------------ scripting
    def fault(self, **fault) -> Peer:
        """Queue a fault for the next matching chat request(s). Keys:
        match (substring of the prompt; default: any request), model (only requests for this
        model), times (default 1). Where several requests are in flight at once, "the next
        request" is whichever arrives first: a test that cares which pair gets the fault says so
        with `match` (e.g. a word of the pair's passage), not with the order of its requests.
        in_flight: hold the answer until this many chat requests are in flight at once (at most
        HOLD_S seconds; the record's `held` says whether that happened), so a test sees the
        client's concurrency whatever the machine's load;
        status (+ retry_after, retry_after_ms, message): answer that HTTP error;
        delay_s: wait before answering; drop: close the connection without an answer;
        content: the text of every choice; grade / grades (one per choice): override the rule;
        body: a raw 200 body; choices: return this many; echo_auth: put the received
        Authorization and api-key headers into the content (a hostile server); echo_headers: put
        every received header there; no_usage: omit `usage`."""
        unknown = set(fault) - FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown fault key(s) {sorted(unknown)}; valid: {sorted(FAULT_KEYS)}")
        with self._lock:
            self._faults.append({"times": 1, **fault})
        return self

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.max_in_flight = 0

    def chat_requests(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def _take_fault(self, prompt: str, model=None) -> dict:
        with self._lock:
            for f in self._faults:
                if f["times"] > 0 and (f.get("match") is None or f["match"] in prompt) \
                        and (f.get("model") is None or f["model"] == model):
                    f["times"] -= 1
                    return dict(f)
        return {}

    # ------------------------------------------------------------------ grading
    def grade(self, query: str, passage: str, title: str) -> tuple[int, str]:
        if (query, title) in self.table:
            return int(self.table[(query, title)]), "a known pair"
        rule = self.rule
        if callable(rule):
            return int(rule(query, passage)), "graded by the peer's rule"
        if isinstance(rule, str) and rule.startswith("constant:"):
            return int(rule.split(":", 1)[1]), "the peer's constant grade"
        if rule == "overlap":
            return overlap_grade(query, passage, self.thresholds)
        raise ValueError(f"unknown rule {rule!r}; use overlap, constant:N or a function")

    def judge(self, prompt: str) -> tuple[int | None, str]:
        """(grade, reason) for a prompt: the query and passage are read back out of it (grade
        None: there are none; the reason says so)."""
        q, p = _QUERY.search(prompt), _PASSAGE.search(prompt)
        q = q or _QUERY_LINE.search(prompt)
        p = p or _PASSAGE_LINE.search(prompt)
        if not q or not p:
            return None, "I cannot find a query and a passage in this prompt."
        passage = p.group(1).strip()
        t = _TITLE.search(passage)
        title = t.group(1).strip() if t else ""
        return self.grade(q.group(1).strip(), passage, title)

    def answer(self, prompt: str, constraint=None) -> tuple[int | None, str]:
        """(grade, content) for a prompt, the content in the form `constraint` asks for (None: the
        peer's `style`)."""
        grade, reason = self.judge(prompt)
        return grade, (self.render(grade, reason, constraint) if grade is not None else reason)

    def render(self, grade, reason: str, constraint=None) -> str:
        """The content that carries `grade`: `constraint` is what the request asked for, as
        `_constraint` reads it (("schema", schema), ("json", None), ("choice", choices), None)."""
        kind, spec = constraint or (None, None)
        if kind == "schema":
            return json.dumps(schema_instance(spec, grade, reason))
        if kind == "choice":
            return str(grade) if str(grade) in spec else spec[0]
        if self.style == "json" or kind == "json":
            return json.dumps({"reason": reason, "grade": grade})
        return f"Reason: {reason}.\nGrade: {grade}"

    def _constraint(self, body: dict, api_version=None):
        """What the request constrains the answer to, as a real server reads it; raises
        ProtocolError (HTTP 400) for one it refuses."""
        found = []
        fmt = body.get("response_format")
        if fmt is not None:
            if not self.response_format:
                raise ProtocolError("Unrecognized request argument supplied: response_format")
            if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
                raise ProtocolError("Invalid value for 'response_format.type': expected one of 'text', "
                                    "'json_object' or 'json_schema'")
            if fmt["type"] == "json_schema":
                if api_version is not None and api_version[:10] < AZURE_JSON_SCHEMA_SINCE:
                    raise ProtocolError(f"response_format value as json_schema is enabled only for api versions "
                                        f"{AZURE_JSON_SCHEMA_SINCE}-preview and later")
                spec = fmt.get("json_schema")
                if isinstance(spec, dict):   # OpenAI's form
                    name, schema, strict = spec.get("name"), spec.get("schema"), spec.get("strict") is True
                    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
                        raise ProtocolError("Missing or invalid 'response_format.json_schema.name': 1-64 letters, "
                                            "digits, _ or -")
                else:                        # llama.cpp's: the schema beside the type
                    name, schema, strict = "schema", fmt.get("schema"), False
                if not isinstance(schema, dict):
                    raise ProtocolError("'response_format.json_schema.schema' must be a JSON Schema object")
                if strict:
                    try:
                        check_strict_schema(schema)
                    except ProtocolError as exc:
                        raise ProtocolError(f"Invalid schema for response_format '{name}': {exc}") from None
                found.append(("schema", schema))
            elif fmt["type"] == "json_object":
                found.append(("schema", fmt["schema"]) if isinstance(fmt.get("schema"), dict) else ("json", None))
        if self.choice_field == "structured_outputs" and body.get("structured_outputs") is not None:
            spec = body["structured_outputs"]
            choices = spec.get("choice") if isinstance(spec, dict) else None
            if choices is not None:
                found.append(("choice", self._choices(choices, "structured_outputs.choice")))
        if self.choice_field == "guided_choice" and body.get("guided_choice") is not None:
            found.append(("choice", self._choices(body["guided_choice"], "guided_choice")))
        if len(found) > 1:
            raise ProtocolError("You can only use one kind of structured outputs constraint but multiple are "
                                "specified (response_format and a choice)")
        return found[0] if found else None

    @staticmethod
    def _choices(choices, field: str) -> list[str]:
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
            raise ProtocolError(f"{field} must be a non-empty list of strings")
        return choices


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False   # stop() must not wait on a keep-alive connection a client left open


def _words(text: str) -> int:
    return len(str(text).split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as real servers
    server_version = "serm-openai-peer/0.1"
    peer: Peer

    def log_message(self, fmt, *args):   # quiet: tests read `peer.requests` instead
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass   # the client gave up (its timeout): nothing to answer

    # ------------------------------------------------------------------ routes
    def do_GET(self):
        self._record(None)
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            names = self.peer.models or ["serm-peer"]
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "serm-openai-peer"} for m in names]})
        elif self.path in ("/health", "/v1/health"):
            self._json(200, {"status": "ok"})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        record = self._record(body)
        peer = self.peer
        url = urlsplit(self.path)
        path, query = url.path.rstrip("/"), parse_qs(url.query)
        deployment = None
        if peer.api_version is not None and path.startswith("/openai/"):
            m = _DEPLOYMENT_PATH.match(path)
            if m:
                deployment = m.group(1)
                version = (query.get("api-version") or [None])[0]
                if version is None:   # Azure's answer to a route without an api-version
                    return self._azure_error(404, "Resource not found", "404")
                if version != peer.api_version:
                    return self._azure_error(400, f"API version {version} is not supported", "BadRequest")
                if peer.deployments is not None and deployment not in peer.deployments:
                    return self._azure_error(404, "The API deployment for this resource does not exist.",
                                             "DeploymentNotFound")
            elif path != "/openai/v1/chat/completions":
                return self._azure_error(404, "Resource not found", "404")
        elif path not in ("/v1/chat/completions", "/chat/completions"):
            return self._error(404, f"no route {self.path}", "not_found")
        with peer._lock:
            peer._in_flight += 1
            peer.max_in_flight = max(peer.max_in_flight, peer._in_flight)
            peer._changed.notify_all()
        try:
            self._chat(body, record, deployment, (query.get("api-version") or [None])[0])
        finally:
            with peer._lock:
                peer._in_flight -= 1
            record["t_end"] = time.monotonic()

    def _chat(self, body, record, deployment=None, api_version=None):
        peer = self.peer
        auth = self.headers.get("Authorization", "")
        api_key = self.headers.get("api-key", "")
        if peer.api_key is not None:
            # Both echo what they received, as a careless server might: the client must redact it.
            if peer.auth == "bearer" and auth != f"Bearer {peer.api_key}":
                return self._error(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')!r}",
                                   "invalid_api_key", "invalid_request_error")
            if peer.auth == "api-key" and api_key != peer.api_key:
                return self._azure_error(401, f"Access denied due to invalid subscription key {api_key!r} or wrong "
                                         f"API endpoint. Make sure to provide a valid key for an active "
                                         f"subscription and use a correct regional API endpoint for your resource.",
                                         "401")
        # A deployment route names the model in its path; the body's `model` may be left out.
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) \
                or not (body.get("model") or deployment):
            return self._error(400, "the body must be JSON with `model` and `messages`", "invalid_request")
        model = deployment or body["model"]
        if deployment is None and peer.models is not None and model not in peer.models:
            return self._error(404, f"The model `{model}` does not exist", "model_not_found", "invalid_request_error")
        try:
            constraint = peer._constraint(body, api_version if peer.api_version is not None else None)
        except ProtocolError as exc:
            return self._error(400, str(exc), "invalid_request_error", "invalid_request_error")
        record["constraint"] = constraint[0] if constraint else None
        prompt = "\n".join(_text(m.get("content")) for m in body["messages"] if isinstance(m, dict))
        fault = peer._take_fault(prompt, model)
        record["fault"] = fault
        if fault.get("in_flight"):
            with peer._changed:
                record["held"] = peer._changed.wait_for(
                    lambda: peer._in_flight >= fault["in_flight"] or peer._stopping.is_set(), HOLD_S) \
                    and not peer._stopping.is_set()
        delay = fault.get("delay_s", peer.delay_s)
        if delay and peer._stopping.wait(delay):
            return
        if fault.get("drop"):
            self.close_connection = True   # no answer at all: "server disconnected"
            return
        if "status" in fault:
            headers = {}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            if fault.get("retry_after_ms") is not None:
                headers["retry-after-ms"] = str(fault["retry_after_ms"])
            message = fault.get("message", "scripted fault")
            if fault.get("echo_auth"):
                message += f" (you sent {auth} {api_key})"
            if fault.get("echo_headers"):
                message += f" (you sent {dict(self.headers.items())})"
            return self._error(fault["status"], message, f"http_{fault['status']}", headers=headers)
        if "body" in fault:
            return self._send(200, str(fault["body"]).encode(), "application/json")

        n = body.get("n", 1)
        n = n if isinstance(n, int) and 1 <= n <= 128 else 1
        k = n if peer.supports_n else 1
        k = min(k, fault["choices"]) if "choices" in fault else k
        grade, content = peer.answer(prompt, constraint)
        contents = []
        for j in range(k):
            if "content" in fault:   # what a server that does not apply the constraint might send
                text = fault["content"]
            elif "grades" in fault or "grade" in fault:
                g = fault["grades"][j % len(fault["grades"])] if "grades" in fault else fault["grade"]
                text = peer.render(g, "a scripted grade", constraint)
            else:
                text = content
            if fault.get("echo_auth"):
                text = f"Your header was {auth} {api_key}\n{text}"
            if fault.get("echo_headers"):
                text = f"Your headers were {dict(self.headers.items())}\n{text}"
            contents.append(text)
        record["grade"] = grade
        peer._ids += 1
        reply = {
            "id": f"chatcmpl-peer-{peer._ids}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "serm-openai-peer",
            "choices": [{"index": j, "message": {"role": "assistant", "content": c}, "logprobs": None,
                         "finish_reason": "stop"} for j, c in enumerate(contents)],
        }
        if not fault.get("no_usage"):
            pt, ct = _words(prompt), sum(_words(c) for c in contents)
            reply["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
            record["usage"] = reply["usage"]
        self._json(200, reply)

    # ------------------------------------------------------------------ helpers
    def _record(self, body) -> dict:
        url = urlsplit(self.path)
        record = {"method": self.command, "path": url.path, "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                  "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body, "constraint": None, "t_start": time.monotonic(), "t_end": None}
        with self.peer._lock:
            self.peer.requests.append(record)
        return record

    def _azure_error(self, status, message, code):
        self._json(status, {"error": {"code": code, "message": message}})

    def _error(self, status, message, code, kind="server_error", headers=None):
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)

    def _json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _send(self, status, data: bytes, ctype, headers=None):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (ConnectionError, TimeoutError):
            self.close_connection = True


def _text(content) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _load_table(path: str) -> dict:
    """JSONL lines {"query": ..., "title": ..., "grade": N}."""
    table = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    table[(row["query"], row.get("title", ""))] = int(row["grade"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise SystemExit(f"{path}:{n}: expected {{\"query\", \"title\", \"grade\"}} ({exc})") from None
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serm.annotation.openai_peer",
                                 description="An OpenAI-compatible test server that grades by a fixed rule.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: a free port (printed on the first line)")
    ap.add_argument("--rule", default="overlap", help="overlap | constant:N")
    ap.add_argument("--table", help="JSONL of {query, title, grade}: known pairs, consulted first")
    ap.add_argument("--models", help="comma-separated model names to serve (default: any)")
    ap.add_argument("--api-key-env", help="require the key in this environment variable (see --auth)")
    ap.add_argument("--auth", choices=AUTH_SCHEMES, default="bearer",
                    help="where the key goes: `Authorization: Bearer KEY` or `api-key: KEY` (Azure OpenAI)")
    ap.add_argument("--api-version", help="serve Azure OpenAI's routes, requiring this api-version")
    ap.add_argument("--no-response-format", action="store_true", help="refuse response_format with a 400")
    ap.add_argument("--choice-field", choices=[*CHOICE_FIELDS, "none"], default="structured_outputs",
                    help="the vLLM field whose choices are honoured")
    ap.add_argument("--style", choices=["line", "json"], default="line")
    ap.add_argument("--no-n", action="store_true", help="ignore `n`: answer one choice")
    ap.add_argument("--delay-s", type=float, default=0.0)
    args = ap.parse_args(argv)
    import os

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            ap.error(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    if args.rule != "overlap" and not re.fullmatch(r"constant:[0-3]", args.rule):
        ap.error("--rule must be overlap or constant:N (N in 0-3)")
    peer = Peer(args.rule, table=_load_table(args.table) if args.table else None, host=args.host, port=args.port,
                api_key=key, models=args.models.split(",") if args.models else None,
                supports_n=not args.no_n, style=args.style, delay_s=args.delay_s, auth=args.auth,
                response_format=not args.no_response_format, api_version=args.api_version,
                choice_field=None if args.choice_field == "none" else args.choice_field).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(peer.port, flush=True)
    print(f"openai_peer: serving {peer.url} (rule {args.rule}); Ctrl-C stops", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
