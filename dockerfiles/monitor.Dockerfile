# ghcr.io/ctr-loop/ctr-monitor — the monitor CronJob (`ctr monitor run`). Build from the repository root:
#   docker build -f dockerfiles/monitor.Dockerfile -t ghcr.io/ctr-loop/ctr-monitor:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ctr ctr
COPY monitor monitor
COPY pipelines pipelines
RUN pip wheel --no-cache-dir --wheel-dir /wheels "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="ctr-monitor" org.opencontainers.image.source="https://github.com/ctr-loop/ctr-loop"
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin ctr
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENTRYPOINT ["ctr"]
CMD ["monitor", "run", "--help"]
