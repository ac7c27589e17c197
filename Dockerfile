# sheepdog: the relay proxy and the alert bridge in one small, non-root image.
#   docker build -t sheepdog .
#   docker run -v ./sheepdog.yaml:/etc/sheepdog/sheepdog.yaml:ro -v sheepdog-data:/var/lib/sheepdog sheepdog
# compose.yaml builds and runs it with the rest of the monitoring stack.

FROM python:3.14-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/sheepdog
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sheepdog ./sheepdog
COPY proxy ./proxy
COPY bridge ./bridge
RUN /opt/sheepdog/bin/pip install .

FROM python:3.14-slim-trixie
ENV PATH=/opt/sheepdog/bin:$PATH \
    SHEEPDOG_CONFIG=/etc/sheepdog/sheepdog.yaml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/sheepdog --shell /usr/sbin/nologin sheepdog \
 && install -d -o sheepdog -g sheepdog -m 0750 /var/lib/sheepdog \
 && install -d -m 0755 /etc/sheepdog
COPY --from=build /opt/sheepdog /opt/sheepdog
USER sheepdog
WORKDIR /var/lib/sheepdog
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/-/healthy', timeout=4)"]
CMD ["sheepdog", "serve", "--config", "/etc/sheepdog/sheepdog.yaml"]
