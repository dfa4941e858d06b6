# The image `kiln deploy k8s` manifests run: kiln on Debian 12, built from this repository.
#   docker build -t kiln:0.1.0 .
#   docker run -p 8000:8000 -v kiln-home:/var/lib/kiln kiln:0.1.0 serve --model NAME@ALIAS --host 0.0.0.0
# Build stage: the toolchain and -dev packages (scripts/install-deps.sh's build set).
FROM debian:12 AS build
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      build-essential cmake ninja-build pkg-config git ca-certificates \
      libtorch-dev libgloo-dev libopenblas0-openmp libyaml-cpp-dev libcli11-dev nlohmann-json3-dev \
      libspdlog-dev libfmt-dev libssl-dev zlib1g-dev libsqlite3-dev libxxhash-dev libpng-dev \
      libjpeg62-turbo-dev libonnx-dev libpqxx-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY src src
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_BUILD_TESTS=OFF \
      -DKILN_BUILD_BENCH=OFF \
    && cmake --build build --target kiln kiln-engine

# Runtime stage: the shared libraries only (LibTorch, OpenBLAS with OpenMP, ONNX, ...).
FROM debian:12
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libyaml-cpp0.7 libspdlog1.10 libfmt9 libssl3 zlib1g \
      libsqlite3-0 libxxhash0 libpng16-16 libjpeg62-turbo libonnx1 libgomp1 libpqxx-6.4 libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --home-dir /var/lib/kiln --create-home kiln
COPY --from=build /src/build/kiln /src/build/kiln-engine /usr/local/bin/
USER 10001
ENV KILN_HOME=/var/lib/kiln
EXPOSE 8000
# kiln serve drains on SIGTERM (stops accepting, answers what is in flight, exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kiln"]
CMD ["serve", "--help"]
