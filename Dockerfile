# Image of the ryw API. Two stages: a Go toolchain builds a static binary, and a
# distroless image (no shell, no package manager, uid 65532) runs it.
#
# The API is configured only through the environment (see docker-compose.yml):
# HTTP_ADDR, DATABASE_URL, DATABASE_REPLICA_URLS, REDIS_URL, RYW_MODE, RYW_WINDOW,
# RYW_MARKER_TTL, AUTH_MODE and AUTH_* (see README). Migrations are embedded in the
# binary and run at start-up.

FROM golang:1.26-bookworm AS build
WORKDIR /src

# Dependencies first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/api ./cmd/api
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/devstack ./cmd/devstack

# The development token issuer (AUTH_MODE=jwt without a real identity
# provider): docker-compose.jwt.yml builds this stage. It mints a token for
# any user to anyone who reaches it: development only.
FROM gcr.io/distroless/static-debian12:nonroot AS issuer
COPY --from=build /out/devstack /usr/local/bin/devstack
USER nonroot:nonroot
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/devstack", "issuer"]

# The API: the last stage, what a plain docker build makes.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/api /usr/local/bin/api
USER nonroot:nonroot
ENV HTTP_ADDR=:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/api"]
