# One image for every process: api, a worker per stage, reconciler, migrate.
#   docker build -t pipeline .
#   docker run --rm pipeline --help

FROM python:3.11-slim AS build
RUN pip install --no-cache-dir "uv>=0.5,<1"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, so that a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN uv sync --no-default-groups --group model --no-install-project
COPY src ./src
COPY migrations ./migrations
RUN uv sync --no-default-groups --group model --no-editable

FROM python:3.11-slim
# Tesseract for the ocr stage (scanned PDFs, images), with its English data; add a
# tesseract-ocr-<lang> package per language in PIPELINE_OCR_LANGUAGES.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 pipeline \
    && useradd --uid 10001 --gid pipeline --no-create-home --shell /usr/sbin/nologin pipeline
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER pipeline:pipeline
EXPOSE 8000
ENTRYPOINT ["pipeline"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
