# extauthz — run `make help` for the targets.

.DEFAULT_GOAL := help
SHELL := /usr/bin/env bash

GO       ?= go
BIN      ?= bin/extauthz
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 5s
BENCHTIME ?= 1s

export GRPCURL := $(CURDIR)/bin/tools/grpcurl

.PHONY: help build tools deps demo test fuzz bench bench-peers fmt lint generate manifests cover clean

help: ## Show the targets and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build the static binary bin/extauthz
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/extauthz

tools: ## Build the pinned tools the tests and demo use (grpcurl, helm, caddy, promtool) into bin/tools, once
	@scripts/tools.sh

deps: ## Install the servers the tests run for real (redis-server, redis-sentinel, nginx) and curl when missing
	@scripts/deps.sh

demo: build ## Start a test IdP and bin/extauthz, send Checks with grpcurl, show the answers
	@scripts/tools.sh grpcurl
	@$(GO) run ./internal/demo -bin $(BIN) -grpcurl $(GRPCURL)

test: tools deps ## Run every test with the race detector, the allocation counts without it, then fuzz for FUZZTIME (5s) per target
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Alloc' ./pkg/...
	@scripts/fuzz.sh $(FUZZTIME)

fuzz: ## Fuzz longer: make fuzz FUZZTIME=10m
	@scripts/fuzz.sh $(FUZZTIME)

bench: build ## Benchmarks with allocation counts, then extauthz against no-op servers under load, Redis-tier hits, memory per cached client, HTTP mode against its no-ops (net/http, fasthttp) under wrk (installed when missing) with a CPU profile in bin/bench, and gRPC under the same load (bench/)
	$(GO) build -o bin/noop ./bench/noop
	@scripts/deps.sh wrk || echo "wrk could not be installed: the load harness skips its wrk section"
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) ./...
	$(GO) test -run='^$$' -bench='Parallel' -benchmem -benchtime=$(BENCHTIME) -cpu 1,2 ./pkg/authz ./pkg/claims
	$(GO) run ./bench/load -bin $(BIN) -noop bin/noop

bench-peers: build ## extauthz's HTTP mode against Ory Oathkeeper on the same IdP (builds it once into bin/tools, ~3 min); not in make test
	@scripts/oathkeeper.sh
	$(GO) run ./bench/peers -bin $(BIN) -oathkeeper bin/tools/oathkeeper

fmt: ## Format every Go file
	gofmt -w $$(git ls-files '*.go')

lint: ## go vet, a gofmt check and staticcheck (pinned in go.mod)
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) tool staticcheck ./...

generate: ## Regenerate proto/ Go code with pinned protoc plugins (the output is committed)
	@scripts/generate.sh

manifests: ## Render deploy/kubernetes/extauthz.yaml and deploy/prometheus/alerts.yaml from the Helm chart
	@scripts/tools.sh helm
	@scripts/manifests.sh

cover: ## Write a coverage report to cover.html
	$(GO) test -count=1 -coverprofile=cover.out ./...
	$(GO) tool cover -html=cover.out -o cover.html
	@$(GO) tool cover -func=cover.out | tail -n 1

clean: ## Remove build and coverage output
	rm -rf bin cover.out cover.html
