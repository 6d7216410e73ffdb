# The tracker as a container: `docker compose up` runs migrations then `tracker serve`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY tracker ./tracker
COPY migrations ./migrations
RUN pip install -e '.[postgres]' && useradd --system --home /app tracker
USER tracker

ENV TRACKER_HOST=0.0.0.0 TRACKER_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["tracker", "serve"]
