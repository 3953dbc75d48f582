# A small image running the proxy as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY wakeproxy ./wakeproxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 wakeproxy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config /etc/wakeproxy
USER wakeproxy
EXPOSE 8080 9091
ENV WAKEPROXY_PROXY_LISTEN=0.0.0.0:8080 \
    WAKEPROXY_ADMIN_LISTEN=0.0.0.0:9091
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["wakeproxy", "health", "--url", "http://127.0.0.1:9091/readyz"]
ENTRYPOINT ["wakeproxy"]
CMD ["serve", "--config", "/etc/wakeproxy/wakeproxy.toml"]
