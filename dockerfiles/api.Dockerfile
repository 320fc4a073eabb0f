# ghcr.io/ctr-loop/ctr-api — the score API (`ctr api`). Build from the repository root:
#   docker build -f dockerfiles/api.Dockerfile -t ghcr.io/ctr-loop/ctr-api:0.1.0 .
# One `pip install` resolves the whole image: PyTorch's CPU torch (dockerfiles/torch-cpu.txt) and the
# project's core dependencies (no nvidia-pytriton: the API reaches Triton with tritonclient).
# tests/integration/test_images.py resolves this same command with `pip install --dry-run --report`.
FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ctr ctr
COPY monitor monitor
COPY pipelines pipelines
COPY dockerfiles/torch-cpu.txt dockerfiles/
RUN /opt/venv/bin/pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu --constraint dockerfiles/torch-cpu.txt .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="ctr-api" org.opencontainers.image.source="https://github.com/ctr-loop/ctr-loop"
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/ctr --shell /usr/sbin/nologin ctr
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/home/ctr
USER 10001
WORKDIR /home/ctr
EXPOSE 8080
ENTRYPOINT ["ctr"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
