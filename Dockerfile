# The user service, served by gunicorn's gthread worker.
#   docker build -t webapp .
#   docker run --rm -e SECRET_KEY=... -e DATABASE_URL=postgresql://... webapp flask --app wsgi db upgrade
#   docker run -p 8000:8000 -e SECRET_KEY=... -e DATABASE_URL=postgresql://... webapp
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home app

# Dependencies in their own layer: code changes do not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# Code stays root-owned and read-only to the app; only instance/ is writable.
COPY config.py gunicorn.conf.py wsgi.py alembic.ini ./
COPY migrations ./migrations
COPY webapp ./webapp
RUN mkdir instance && chown app:app instance

USER 10001:10001

ENV APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
