# The image every step of the SERM pipelines runs in (components' base_image "serm:0.1.0"):
#   docker build -t serm:0.1.0 .        # then push it where the cluster pulls from and, if
#                                        # renamed, set pipelines/evolution.py IMAGE to match
# Installed like scripts/setup.sh installs .venv/: torch pinned first, on its own, then the
# project with its pins. TORCH_INDEX_URL picks the torch build: unset, pip's default index
# (on Linux a CUDA build, for the GPU training step); a CPU-only wheel index for a small image.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false FEAST_USAGE=False

# git: each step clones the workspace repository; the cluster steps need nothing else from the OS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/serm
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY serm ./serm
COPY pipelines ./pipelines
COPY monitoring ./monitoring
COPY features ./features
COPY policies ./policies
# cpu: the same torch pin as above (already satisfied); no test extras in the image.
RUN pip install ".[cpu]" && pip check && serm --help > /dev/null

# Plugins (README "Plugins"): packages declaring SERM entry points (serm.mining_agents,
# serm.annotation_agents, serm.drift_detectors), baked in so every step of a cluster run finds
# them. Space-separated pip requirement specs, e.g.
#   docker build --build-arg SERM_PLUGINS="my-serm-plugins==1.2.0 git+https://example.com/team/judges@v3" -t serm:0.1.0 .
# (a local package: COPY it into the image above this line and name its path). SERM's installed
# versions constrain the install (a plugin cannot move a pin); the build fails if a plugin does
# not install or does not load, and prints the plugins it found.
ARG SERM_PLUGINS=""
RUN if [ -n "$SERM_PLUGINS" ]; then \
      pip list --format=freeze > /tmp/serm-pins.txt \
      && pip install -c /tmp/serm-pins.txt $SERM_PLUGINS && pip check \
      && python -c "from serm.policy_schema import installed_plugins; print(*installed_plugins(), sep='\\n')"; \
    fi

# A pipeline step runs `python -m kfp.dsl.executor_main ...` (KFP sets the command); this is
# for running serm by hand in the image.
ENTRYPOINT ["serm"]
