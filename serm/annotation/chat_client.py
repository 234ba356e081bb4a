"""A client for OpenAI-compatible chat-completions endpoints (vLLM, Ollama, llama.cpp server,
OpenAI): the transport under `llm_judge`, for any agent that puts prompts to a model server.

It POSTs bodies to `<endpoint>/chat/completions` (plus `?api-version=...` for Azure OpenAI) and
deals with what real servers do: retries with exponential backoff and jitter on 429/5xx and
transport errors (a 429's or 503's Retry-After is honoured), a timeout per request, bounded
concurrency, one rate limiter shared by all workers, and usage/cost accounting. 401/403/404
raise an `AnnotationError`: every other request would fail the same way.

The API key goes only into its header, `Authorization: Bearer <key>` (`auth="bearer"`: OpenAI,
vLLM, Ollama, llama.cpp, Azure's v1 API) or `api-key: <key>` (`auth="api-key"`: Azure OpenAI's
deployment URLs). `extra_headers` are sent with every request; their values may name
environment variables (`"Bearer ${AZURE_AD_TOKEN}"`), read when the client is built. The key and
those values are redacted from every error, log line and counter the client hands back.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass

from serm.errors import AnnotationError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
AUTH_SCHEMES = ("bearer", "api-key")
# The headers that carry the key, by `auth`.
KEY_HEADERS = {"bearer": "Authorization", "api-key": "api-key"}
# Headers the transport writes itself: an extra header may not replace them.
TRANSPORT_HEADERS = frozenset({"host", "content-type", "content-length", "transfer-encoding", "connection",
                               "accept", "accept-encoding", "te", "upgrade", "expect"})
# Header names that carry credentials: their values must come from the environment.
_CREDENTIAL_NAME = re.compile(r"authorization|api[-_]?key|token|secret|password|cookie|credential|signature",
                              re.IGNORECASE)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Values read from the environment shorter than this are not redacted unless their header looks
# like a credential: blanking every "1" or "en" would garble the text the redaction protects.
MIN_REDACTED_CHARS = 8


def one_line(text, limit: int) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def snippet(text, limit: int = 120) -> str:
    """A short quoted excerpt, for error messages that show what came back."""
    return repr(one_line(text, limit))


class RateLimiter:
    """At most `per_second` request starts per second across all workers (slots `1/rate`
    apart, no bursts). None: unlimited."""

    def __init__(self, per_second: float | None, clock=time.monotonic):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, cancel: threading.Event) -> float | None:
        """Block until this caller's slot (or `cancel`); returns the slot's start on the
        limiter's clock, None when unlimited."""
        if not self.interval:
            return None
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            cancel.wait(slot - now)
        return slot


def retry_after_s(headers) -> float | None:
    """Seconds a 429/503 asks us to wait: `retry-after-ms` (OpenAI), else `Retry-After` as
    seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def api_key_from_env(name: str | None, who: str) -> str | None:
    """The key in the environment variable `name` (None: no key); `who` prefixes the errors."""
    if name is None:
        return None
    key = os.environ.get(name, "")
    if not key.strip():
        raise AnnotationError(
            f"{who}: api_key_env names the environment variable {name}, which is not set "
            f"(or empty); export {name}=<your key> before running, or remove api_key_env for a "
            f"server that needs no key")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in key.strip()):
        raise AnnotationError(
            f"{who}: the environment variable {name} holds characters that cannot go in an "
            f"HTTP header (value not shown); set it to the bare key")
    return key.strip()


def is_credential_header(name: str) -> bool:
    """Whether a header's name says it carries a credential (Authorization, api-key, X-Auth-Token...)."""
    return bool(_CREDENTIAL_NAME.search(name))


def extra_header_problems(headers: dict, *, key_header: str | None) -> list[str]:
    """What is wrong with `extra_headers` (empty: nothing), naming the header, never its value.
    `key_header`: the header the API key goes into (None: no key), which an extra header may not
    replace; neither may one of the headers the transport writes."""
    problems = []
    seen: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            problems.append(f"extra_headers: {name!r} is not a valid HTTP header name")
            continue
        low = name.lower()
        if low in seen:
            problems.append(f"extra_headers.{name}: given twice ({seen[low]} and {name}; header names ignore case)")
        seen[low] = name
        if low in TRANSPORT_HEADERS:
            problems.append(f"extra_headers.{name}: the client writes this header itself; remove it")
        elif key_header and low in {h.lower() for h in KEY_HEADERS.values()}:
            problems.append(f"extra_headers.{name} would replace or double the API key that api_key_env puts into "
                            f"the {key_header} header; remove it, or remove api_key_env and send the credential "
                            f"only through extra_headers")
        if not isinstance(value, str):
            problems.append(f"extra_headers.{name}: the value must be a string")
            continue
        rest = ENV_REF.sub("", value)
        if "${" in rest:
            problems.append(f"extra_headers.{name}: a malformed ${{...}} reference (value not shown); write "
                            f"${{NAME}} with NAME an environment variable (letters, digits, _)")
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in rest):
            problems.append(f"extra_headers.{name}: the value holds characters that cannot go in an HTTP header "
                            f"(value not shown)")
        if is_credential_header(name) and not ENV_REF.search(value):
            problems.append(f"extra_headers.{name} looks like a credential but holds a literal value (not shown); "
                            f"policies are committed: take it from the environment, e.g. "
                            f"`{name}: \"${{MY_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}}}\"`")
    return problems


def headers_from_env(headers: dict, who: str) -> tuple[dict[str, str], list[str]]:
    """(headers with every ${NAME} replaced by the variable's value, the values to redact).
    An unset or empty variable, or a value that cannot go in a header, raises AnnotationError
    naming the header and the variable, never the value."""
    out, secrets = {}, []
    for name, template in headers.items():
        def value_of(m, name=name):
            var = m.group(1)
            value = os.environ.get(var, "")
            if not value.strip():
                raise AnnotationError(
                    f"{who}: extra_headers.{name} names the environment variable {var}, which is not set (or "
                    f"empty); export {var}=<value> before running, or remove the header")
            value = value.strip()
            if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
                raise AnnotationError(f"{who}: the environment variable {var} (for extra_headers.{name}) holds "
                                      f"characters that cannot go in an HTTP header (value not shown)")
            if is_credential_header(name) or len(value) >= MIN_REDACTED_CHARS:
                secrets.append(value)
            return value

        out[name] = ENV_REF.sub(value_of, template)
    return out, secrets


@dataclass
class ChatOutcome:
    """One chat-completions call after its retries: the parsed body, or why it failed."""

    data: dict | None = None
    error: str = ""
    status: int | None = None
    latency_ms: float = 0.0


class ChatClient:
    """One batch of chat-completions requests to an OpenAI-compatible server.

    Use as a context manager (it holds the HTTP connection pool)::

        client = ChatClient(endpoint, who="llm_judge:m", api_key_env="OPENAI_API_KEY")
        with client:
            results = client.map(lambda body: client.complete(body), bodies)

    `complete(body)` POSTs one body with retries and returns a `ChatOutcome`; it raises
    `AnnotationError` on 401/403/404. `api_version` adds `?api-version=...` to the URL (Azure
    OpenAI); `auth` picks the key's header ("bearer": `Authorization: Bearer <key>`, "api-key":
    `api-key: <key>`); `extra_headers` go with every request, `${NAME}` in a value replaced by the
    environment variable NAME (read on construction, like the key, and redacted). `map(fn,
    items)` runs `fn` on `concurrency` threads; the first exception stops the other workers at
    their next request or backoff. `usage(data, k)` splits a response's tokens and cost over its
    k choices. `stats` counts requests, retries, failed requests, status codes, tokens and cost,
    and keeps the first error; `redact(text)` removes the key and the header secrets from any
    text. The key is read from the variable `api_key_env` on construction (an unset one raises
    before anything is sent). `who` names the caller in errors and log lines; `logger` is where
    they go (the caller's, so its records keep its name).
    """

    def __init__(self, endpoint: str, *, who: str = "chat client", api_key_env: str | None = None,
                 auth: str = "bearer", api_version: str | None = None, extra_headers: dict | None = None,
                 timeout_s: float = 30.0, max_retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, concurrency: int = 4, requests_per_second: float | None = None,
                 price_per_1k_prompt_tokens: float = 0.0, price_per_1k_completion_tokens: float = 0.0,
                 user_agent: str = "serm-chat-client", thread_name: str = "chat_client", logger=None):
        from urllib.parse import urlencode

        if auth not in AUTH_SCHEMES:
            raise AnnotationError(f"{who}: auth must be one of {', '.join(AUTH_SCHEMES)}, got {auth!r}")
        self.endpoint, self.who, self.api_key_env, self.auth = endpoint, who, api_key_env, auth
        self.api_version = api_version
        self.url = endpoint.rstrip("/") + "/chat/completions"
        if api_version:
            self.url += "?" + urlencode({"api-version": api_version})
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.concurrency = concurrency
        self.prices = (price_per_1k_prompt_tokens, price_per_1k_completion_tokens)
        self.user_agent, self.thread_name = user_agent, thread_name
        self.log = logger or log
        self.key = api_key_from_env(api_key_env, who)
        extra_headers = dict(extra_headers or {})
        problems = extra_header_problems(extra_headers, key_header=KEY_HEADERS[auth] if api_key_env else None)
        if problems:
            raise AnnotationError(f"{who}: " + "; ".join(problems))
        self.extra_header_vars = sorted({v for t in extra_headers.values() for v in ENV_REF.findall(t)})
        self.extra_headers, secrets = headers_from_env(extra_headers, who)
        # Longest first: a secret that contains another is removed whole.
        self._secrets = sorted({s for s in [self.key, *secrets] if s}, key=len, reverse=True)
        self.limiter = RateLimiter(requests_per_second)
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.stats: dict = {"requests": 0, "retries": 0, "failed_requests": 0, "prompt_tokens": 0,
                            "completion_tokens": 0, "cost": 0.0, "missing_usage": 0, "status": {},
                            "first_error": ""}
        self._http = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ChatClient:
        from urllib.parse import urlsplit

        import httpx

        headers = {"Accept": "application/json", "User-Agent": self.user_agent, **self.extra_headers}
        if self.key:
            headers[KEY_HEADERS[self.auth]] = f"Bearer {self.key}" if self.auth == "bearer" else self.key
        if self.key or any(is_credential_header(h) for h in self.extra_headers):
            url = urlsplit(self.endpoint)
            host = url.hostname or ""
            if url.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
                self.log.warning("%s: credentials go to %s over plain http; use https", self.who, host)
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout_s), follow_redirects=False,
                                  limits=httpx.Limits(max_connections=self.concurrency,
                                                      max_keepalive_connections=self.concurrency))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # ------------------------------------------------------------------ work
    def map(self, fn, items) -> list:
        """[fn(item) for item in items], on `concurrency` threads, in the order of `items`."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        items = list(items)
        out: list = [None] * len(items)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=self.thread_name) as pool:
            futures = {pool.submit(fn, item): j for j, item in enumerate(items)}
            try:
                for fut in as_completed(futures):   # the first error stops the rest
                    out[futures[fut]] = fut.result()
            except BaseException:
                self.cancel.set()   # stop the other workers at their next request or backoff
                for fut in futures:
                    fut.cancel()
                raise
        return out

    def count(self, key: str, by=1) -> None:
        with self.lock:
            self.stats[key] += by

    def redact(self, text) -> str:
        """`text` without the key or any secret value taken from the environment for a header."""
        text = str(text)
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def complete(self, body: dict) -> ChatOutcome:
        """POST with retries. Returns the body, or the last error once the retries are spent;
        raises AnnotationError on 401/403/404 (configuration, not luck)."""
        import httpx

        url = self.url
        t0 = time.perf_counter()
        error, status = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.count("retries")
            self.limiter.wait(self.cancel)
            if self.cancel.is_set():
                return ChatOutcome(error="cancelled", latency_ms=_ms(t0))
            self.count("requests")
            delay = None
            try:
                resp = self._http.post(url, json=body)
            except httpx.TimeoutException as exc:
                error, status = f"timed out after {self.timeout_s:g}s ({type(exc).__name__})", None
            except httpx.TransportError as exc:
                error, status = f"{type(exc).__name__}: {self.redact(exc) or 'connection failed'}", None
            else:
                status = resp.status_code
                with self.lock:
                    self.stats["status"][status] = self.stats["status"].get(status, 0) + 1
                if status == 200:
                    return self._body(resp, t0)
                message = self.redact(_error_message(resp))
                error = f"HTTP {status} from {url}: {message}"
                if status in (401, 403):
                    raise AnnotationError(f"{self.who}: {error}; the server refused the credentials: "
                                          + self._credentials_hint())
                if status == 404:
                    raise AnnotationError(f"{self.who}: {error}; " + self._not_found_hint(body))
                if status not in RETRY_STATUS:
                    return self._failed(error, status, t0)
                if status in (429, 503):
                    delay = retry_after_s(resp.headers)
            self.log.debug("%s: attempt %d failed: %s", self.who, attempt + 1, error)
            if attempt < self.max_retries:
                if delay is None:
                    delay = self.backoff_s * 2 ** attempt * random.uniform(0.5, 1.0)
                else:   # honour Retry-After; the jitter spreads workers that were told the same
                    delay += random.uniform(0.0, self.backoff_s)
                self._pause(min(delay, self.max_backoff_s))
        return self._failed(f"{error} (gave up after {self.max_retries + 1} attempt(s))", status, t0)

    def usage(self, data: dict, k: int) -> tuple[list[int], list[float]]:
        """Per-choice tokens and cost: the request's usage split over its k choices (the prompt
        is billed once per request, whatever `n`), the remainder on the first."""
        usage = data.get("usage")
        try:
            prompt, completion = int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)
            if prompt < 0 or completion < 0:
                raise ValueError
        except (TypeError, KeyError, ValueError):
            self.count("missing_usage")
            return [0] * k, [0.0] * k
        self.count("prompt_tokens", prompt)
        self.count("completion_tokens", completion)
        per_prompt, per_completion = self.prices
        tokens, cost = [], []
        for j in range(k):
            pt = prompt // k + (prompt % k if j == 0 else 0)
            ct = completion // k + (completion % k if j == 0 else 0)
            tokens.append(pt + ct)
            cost.append(pt / 1000 * per_prompt + ct / 1000 * per_completion)
        self.count("cost", sum(cost))
        return tokens, cost

    # ------------------------------------------------------------------ helpers
    def _credentials_hint(self) -> str:
        sent = []
        if self.api_key_env:
            sent.append(f"the key in the environment variable {self.api_key_env} (sent as "
                        + ("`Authorization: Bearer`" if self.auth == "bearer" else "the `api-key` header") + ")")
        if self.extra_header_vars:
            sent.append("the variable(s) extra_headers name: " + ", ".join(self.extra_header_vars))
        if sent:
            hint = "check " + " and ".join(sent)
            if self.api_key_env and self.auth == "bearer" and self.api_version:
                hint += "; Azure OpenAI's deployment URLs take the key as `auth: api-key`"
            return hint
        return "this server needs a key: set api_key_env to the NAME of the variable holding it"

    def _not_found_hint(self, body: dict) -> str:
        if self.api_version or self.auth == "api-key":
            return ("check `endpoint` (Azure OpenAI: https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT "
                    f"with api_version, or https://RESOURCE.openai.azure.com/openai/v1 with the deployment as model), "
                    f"the deployment's name and api_version {self.api_version!r}")
        return (f"check `endpoint` (the API base, usually ending in /v1) and that the server serves model "
                f"{body.get('model')!r} (GET {self.endpoint.rstrip('/')}/models)")

    def _pause(self, seconds: float) -> None:
        # Every wait between attempts goes through here; `cancel` cuts it short.
        self.cancel.wait(seconds)

    def _body(self, resp, t0: float) -> ChatOutcome:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            return self._failed(f"a 200 response that is not a chat completion: {snippet(self.redact(resp.text))}",
                                200, t0)
        return ChatOutcome(data=data, status=200, latency_ms=_ms(t0))

    def _failed(self, error: str, status: int | None, t0: float) -> ChatOutcome:
        with self.lock:
            self.stats["failed_requests"] += 1
            self.stats["first_error"] = self.stats["first_error"] or error
        return ChatOutcome(error=error, status=status, latency_ms=_ms(t0))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def _error_message(resp) -> str:
    """The `error.message` of an OpenAI-style error body, else the start of the body."""
    try:
        err = resp.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return one_line(str(err["message"]), 200)
        if isinstance(err, str):
            return one_line(err, 200)
    except (ValueError, AttributeError):
        pass
    return one_line(resp.text, 200) or resp.reason_phrase
