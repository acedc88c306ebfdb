# The Airflow image: Airflow 3 (with the cncf.kubernetes provider that runs operators as
# pods) plus the jip package (DAG building blocks, worker code, runners) and JIP's DAGs.
# `make images` builds it (deploy/images.py); by hand, from the repository root:
#   podman build --format docker -f deploy/airflow.Dockerfile -t jip/airflow:0.1.0 .
# BASE: see deploy/Dockerfile.
ARG BASE=localhost/jip/base:bookworm

# --- requirements: the dependency lists alone, so that an edit elsewhere in pyproject.toml
# (tool settings) leaves the dependency layer below cached (COPY --from compares content).
FROM ${BASE} AS requirements
COPY pyproject.toml deploy/pyproject_requirements.py /src/
RUN python3 /src/pyproject_requirements.py /src/pyproject.toml > /src/req.txt \
    && python3 /src/pyproject_requirements.py /src/pyproject.toml workflow \
        --exclude pyradiomics-bhklab > /src/req-workflow.txt

# --- build: the same first layers as deploy/Dockerfile (shared cache), then Airflow ----
FROM ${BASE} AS build
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/tools && /opt/tools/bin/pip install --quiet "uv>=0.5,<1"
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=1
COPY sdk /src/sdk
COPY --from=requirements /src/req.txt /src/jip/
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/tools/bin/uv venv --quiet --python python3 /opt/venv \
    && /opt/tools/bin/uv pip install --quiet --python /opt/venv/bin/python /src/sdk -r /src/jip/req.txt
# The workflow extra: apache-airflow (pinned there) and the cncf.kubernetes provider.
# Not pyradiomics: in the cluster operators run as pods of their own images.
COPY --from=requirements /src/req-workflow.txt /src/jip/
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/tools/bin/uv pip install --quiet --python /opt/venv/bin/python /src/sdk -r /src/jip/req-workflow.txt
COPY pyproject.toml README.md /src/jip/
COPY services /src/jip/services
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/tools/bin/uv pip install --quiet --python /opt/venv/bin/python --no-deps /src/jip

# --- final -----------------------------------------------------------------------------
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow HOME=/tmp
# uid 50000, gid 0: the official Airflow image's user, which Airflow's chart assumes.
RUN echo 'airflow:x:50000:0::/opt/airflow:/usr/sbin/nologin' >> /etc/passwd \
    && mkdir -p /opt/airflow/dags /opt/airflow/logs && chown -R 50000:0 /opt/airflow
COPY --from=build /opt/venv /opt/venv
COPY operators /opt/jip-operators
COPY dags /opt/airflow/dags
ENV JIP_FLOW__OPERATORS_DIR=/opt/jip-operators
USER 50000:0
WORKDIR /opt/airflow
# No HEALTHCHECK: one image, several Airflow components (api-server, scheduler,
# dag-processor, triggerer, task pods); the chart gives each its own probe.
ENTRYPOINT ["airflow"]
CMD ["version"]
