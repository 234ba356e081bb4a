"""A client for OpenAI-compatible chat-completions endpoints (vLLM, Ollama, llama.cpp server,
OpenAI): the transport under `llm_judge`, for any agent that puts prompts to a model server.

It POSTs bodies to `<endpoint>/chat/completions` and deals with what real servers do: retries
with exponential backoff and jitter on 429/5xx and transport errors (a 429's or 503's
Retry-After is honoured), a timeout per request, bounded concurrency, one rate limiter shared
by all workers, and usage/cost accounting. 401/403/404 raise an `AnnotationError`: every other
request would fail the same way. The API key goes only into the Authorization header and is
redacted from every error, log line and counter the client hands back.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass

from serm.errors import AnnotationError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


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
    `AnnotationError` on 401/403/404. `map(fn, items)` runs `fn` on `concurrency` threads; the
    first exception stops the other workers at their next request or backoff. `usage(data, k)`
    splits a response's tokens and cost over its k choices. `stats` counts requests, retries,
    failed requests, status codes, tokens and cost, and keeps the first error; `redact(text)`
    removes the key from any text. The key is read from the variable `api_key_env` on
    construction (an unset one raises before anything is sent). `who` names the caller in
    errors and log lines; `logger` is where they go (the caller's, so its records keep its name).
    """

    def __init__(self, endpoint: str, *, who: str = "chat client", api_key_env: str | None = None,
                 timeout_s: float = 30.0, max_retries: int = 3, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, concurrency: int = 4, requests_per_second: float | None = None,
                 price_per_1k_prompt_tokens: float = 0.0, price_per_1k_completion_tokens: float = 0.0,
                 user_agent: str = "serm-chat-client", thread_name: str = "chat_client", logger=None):
        self.endpoint, self.who, self.api_key_env = endpoint, who, api_key_env
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.concurrency = concurrency
        self.prices = (price_per_1k_prompt_tokens, price_per_1k_completion_tokens)
        self.user_agent, self.thread_name = user_agent, thread_name
        self.log = logger or log
        self.key = api_key_from_env(api_key_env, who)
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

        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
            url = urlsplit(self.endpoint)
            host = url.hostname or ""
            if url.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
                self.log.warning("%s: the API key goes to %s over plain http; use https", self.who, host)
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
        text = str(text)
        return text.replace(self.key, "[redacted]") if self.key else text

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
                    raise AnnotationError(
                        f"{self.who}: {error}; the server refused the credentials: "
                        + (f"check the key in the environment variable {self.api_key_env}" if self.api_key_env
                           else "this server needs a key: set api_key_env to the NAME of the variable holding it"))
                if status == 404:
                    raise AnnotationError(
                        f"{self.who}: {error}; check `endpoint` (the API base, usually ending in /v1) "
                        f"and that the server serves model {body.get('model')!r} "
                        f"(GET {self.endpoint.rstrip('/')}/models)")
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
