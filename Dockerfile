# llmchat production image: gunicorn + uvicorn workers (ASGI), non-root.
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app

RUN groupadd --system llmchat \
    && useradd --system --gid llmchat --home-dir /app --shell /usr/sbin/nologin llmchat

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# collectstatic imports the settings, which in production refuse to load without
# a SECRET_KEY: this throwaway value exists only for this build step and is not
# kept in the image's environment.
RUN DEBUG=false \
    SECRET_KEY=collectstatic-build-step-only-not-a-real-secret-0123456789 \
    ALLOWED_HOSTS=build \
    DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --noinput \
    && rm -f /tmp/build.sqlite3 \
    && mkdir -p /app/var \
    && chown llmchat:llmchat /app/var

USER llmchat
EXPOSE 8000

# /health answers over plain HTTP on any Host; 503 when the database or cache is down.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=4).status == 200 else 1)"]

# gunicorn reads gunicorn.conf.py from /app: uvicorn workers, graceful shutdown.
CMD ["gunicorn", "llmchat.asgi:application"]
