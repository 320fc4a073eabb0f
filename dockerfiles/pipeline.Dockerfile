# ghcr.io/ctr-loop/ctr-pipeline — the KFP components (`pipelines/components.py`, CTR_PIPELINE_IMAGE). Build from the repository root:
#   docker build -f dockerfiles/pipeline.Dockerfile -t ghcr.io/ctr-loop/ctr-pipeline:0.1.0 .
# One `pip install` resolves the whole image: PyPI's CUDA torch (dockerfiles/torch-cuda.txt) for the
# train step, and the project's core dependencies, kfp among them, so the components install nothing
# at run time (`install_kfp_package=False`). `python3` on PATH is this venv's, as KFP's command expects.
# tests/integration/test_images.py resolves this same command with `pip install --dry-run --report`.
FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ctr ctr
COPY monitor monitor
COPY pipelines pipelines
COPY dockerfiles/torch-cuda.txt dockerfiles/
RUN /opt/venv/bin/pip install --no-cache-dir --constraint dockerfiles/torch-cuda.txt .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="ctr-pipeline" org.opencontainers.image.source="https://github.com/ctr-loop/ctr-loop"
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/ctr --shell /usr/sbin/nologin ctr
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/home/ctr
USER 10001
WORKDIR /home/ctr
CMD ["python", "-c", "import ctr, pipelines"]
