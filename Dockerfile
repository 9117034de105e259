# A static extauthz on a distroless base, running as a non-root user.
#   docker build -t extauthz:dev --build-arg VERSION=$(git describe --tags --always) .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/extauthz ./cmd/extauthz

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/extauthz /extauthz
USER 65532:65532
EXPOSE 9001 8001 9090
ENTRYPOINT ["/extauthz"]
CMD ["serve", "--config", "/etc/extauthz/config.yaml"]
