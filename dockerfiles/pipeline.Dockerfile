# ghcr.io/ctr-loop/ctr-pipeline — the KFP components (`pipelines/components.py`, CTR_PIPELINE_IMAGE). Build from the repository root:
#   docker build -f dockerfiles/pipeline.Dockerfile -t ghcr.io/ctr-loop/ctr-pipeline:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ctr ctr
COPY monitor monitor
COPY pipelines pipelines
RUN pip wheel --no-cache-dir --wheel-dir /wheels "torch==2.13.0" \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="ctr-pipeline" org.opencontainers.image.source="https://github.com/ctr-loop/ctr-loop"
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin ctr
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
CMD ["python", "-c", "import ctr, pipelines"]
