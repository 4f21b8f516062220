# klingbot: one process runs the bot, the job pipeline and the web server.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KLINGBOT_DB_PATH=/data/klingbot.db \
    KLINGBOT_MEDIA_DIR=/data/media \
    KLINGBOT_HTTP_HOST=0.0.0.0 \
    KLINGBOT_HTTP_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN pip install --upgrade pip && pip install . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin klingbot \
    && mkdir -p /data /media && chown klingbot:klingbot /data /media

USER klingbot
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('KLINGBOT_HTTP_PORT', '8080') + '/healthz', timeout=4)" || exit 1

ENTRYPOINT ["klingbot"]
CMD ["run"]
