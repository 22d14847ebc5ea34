# The project's image: the `pipeline` command with every package of the distribution
# (pipeline, producers, consumers). Used by docker-compose.yml for the jobs and services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/pipeline
COPY . .
RUN pip install . \
    && groupadd --gid 10001 pipeline \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/pipeline pipeline

# Run from the home folder, not the source tree: the installed packages are the ones imported,
# and settings come from PIPELINE_* variables (no .env is copied into the image).
WORKDIR /home/pipeline
USER 10001:10001

ENTRYPOINT ["pipeline"]
CMD ["--help"]
