# ghcr.io/ctr-loop/ctr-loadtest — locust with the project's ad-server scenario (tests/load/locustfile.py),
# for k8s/components/loadtest (one master, N workers). Build from the repository root:
#   docker build -f dockerfiles/loadtest.Dockerfile -t ghcr.io/ctr-loop/ctr-loadtest:0.1.0 .
# The scenario draws its requests from the project's synthetic world (ctr.data.world), so the image
# installs the project (CPU torch, as the API image) with the `load` extra, in one `pip install`.
# tests/integration/test_images.py resolves this same command with `pip install --dry-run --report`.
FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ctr ctr
COPY monitor monitor
COPY pipelines pipelines
COPY dockerfiles/torch-cpu.txt dockerfiles/
RUN /opt/venv/bin/pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu --constraint dockerfiles/torch-cpu.txt ".[load]"

FROM python:3.11-slim
LABEL org.opencontainers.image.title="ctr-loadtest" org.opencontainers.image.source="https://github.com/ctr-loop/ctr-loop"
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/ctr --shell /usr/sbin/nologin ctr
COPY --from=build /opt/venv /opt/venv
COPY tests/load/locustfile.py /opt/ctr-loadtest/locustfile.py
ENV PATH=/opt/venv/bin:$PATH HOME=/home/ctr
USER 10001
WORKDIR /home/ctr
EXPOSE 5557 8089
ENTRYPOINT ["locust", "-f", "/opt/ctr-loadtest/locustfile.py"]
