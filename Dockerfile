# One image for every Textpulse process: `textpulse api`, `textpulse worker`, `textpulse migrate`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY textpulse ./textpulse
COPY core ./core
COPY plugins ./plugins
COPY workflows ./workflows
COPY api ./api
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system textpulse
COPY plugins.toml ./
USER textpulse
ENV TEXTPULSE_DATA_DIR=/tmp/textpulse TEXTPULSE_HTTP_HOST=0.0.0.0
EXPOSE 8000
CMD ["textpulse", "api"]
