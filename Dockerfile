# rfmcube-cdc service image. Build: docker build -t rfmcube-cdc .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
COPY emulator ./emulator
RUN pip install --no-cache-dir . && useradd --uid 10001 rfmcube
USER 10001
# The store is a cache of the topics: an emptyDir is enough (rebuilt at start-up).
VOLUME /var/lib/rfmcube-cdc
EXPOSE 8080
ENTRYPOINT ["rfmcube-cdc", "run", "--config", "/etc/rfmcube-cdc/config.yaml"]
