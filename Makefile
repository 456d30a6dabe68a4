# ryw: read-your-writes over PostgreSQL streaming replicas.
GO      ?= go
ARGS    ?=
BIN     := bin

.PHONY: run test chaos bench screenshot docs lint build clean help

## run: start a primary, 2 streaming replicas, Redis and the API on this machine (Ctrl-C stops all).
##      Pass devstack flags with ARGS, e.g. make run ARGS="-mode lsn -instances 2".
run: build
	./$(BIN)/devstack -api-bin $(BIN)/ryw-api $(ARGS)

## test: every test, with the race detector, against real PostgreSQL and Redis started by devstack;
##       then the API's suite again with bearer tokens (AUTH_MODE=jwt) instead of X-Demo-UserId,
##       and the consistency suites behind PgBouncer in transaction and in session mode.
test:
	$(GO) test -race -count=1 -timeout 15m ./...
	RYW_TEST_AUTH=jwt $(GO) test -race -count=1 -timeout 10m ./cmd/api
	RYW_TEST_POOLER=transaction $(GO) test -race -count=1 -timeout 10m -run '$(POOLED_TESTS)' ./ryw ./cmd/api
	RYW_TEST_POOLER=session $(GO) test -race -count=1 -timeout 10m -run '$(POOLED_TESTS)' ./ryw ./cmd/api

# The suites run again with a PgBouncer in front of every node: read-your-writes,
# lsn mode (a replica crash under load included), monotonic reads, the front door.
POOLED_TESTS := ReadYourWrites|LSNMode|Monotonic|FrontDoor|Pooled|Pooler|ServedByIsTruthful|TwoProcesses|SettlesBeforeBEGIN

## chaos: the history checker: 100k requests per mode over 2 API instances while replicas pause,
##        crash and restart, Redis restarts empty and loses one instance; writes docs/CHAOS.md.
##        Pass flags with ARGS, e.g. make chaos ARGS="-ops 20000 -modes lsn".
chaos: build
	$(GO) build -o $(BIN)/rywchaos ./cmd/rywchaos
	./$(BIN)/rywchaos -api-bin $(BIN)/ryw-api -out docs/CHAOS.md $(ARGS)

## bench: what read-your-writes costs per request: off, time and lsn API processes taking turns on
##        one cluster (closed-loop peak with wrk if installed, latency at half the off-mode peak,
##        pgbench -S and redis-benchmark on the same nodes, CPU per request by process, 1/2/4
##        replicas, 1k/100k users); about 8 minutes; writes its section of docs/BENCHMARKS.md.
##        Pass flags with ARGS, e.g. make bench ARGS="-rounds 3 -scale=false", or
##        ARGS="-suite own-write" for the write-then-read workload (bin/rywbench -h lists them).
##        ARGS="-suite peers" sets ryw beside pgpool-II and every read on the primary; it installs
##        Debian's pgpool2 first when /usr/sbin/pgpool is missing (apt-get, with sudo unless root).
bench: build
	$(GO) build -o $(BIN)/rywbench ./cmd/rywbench
	@# What a suite runs beside the API, installed from Debian when missing:
	@# flag and value in ARGS, the program, the package.
	@sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	for need in "suite peers /usr/sbin/pgpool pgpool2" "proxy haproxy /usr/sbin/haproxy haproxy"; do \
		set -- $$need; \
		case " $(ARGS) " in *" -$$1 $$2 "*|*" -$$1=$$2 "*|*" --$$1 $$2 "*|*" --$$1=$$2 "*) \
			if [ ! -x $$3 ]; then \
				echo "bench: -$$1 $$2 runs $$4: installing Debian's $$4"; \
				DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$4 || \
					{ echo "bench: could not install $$4 (try apt-get update first)"; exit 1; }; \
			fi;; \
		esac; \
	done
	./$(BIN)/rywbench -api-bin $(BIN)/ryw-api -out docs/BENCHMARKS.md $(ARGS)

## screenshot: docs/live-page.png, the README's picture of the live page, taken by the browser test
##             (headless Chromium) after its try-it run with both replicas paused.
screenshot:
	RYW_SCREENSHOT_DIR=$(CURDIR)/docs $(GO) test -count=1 -run TestTryItShowsTheFixAndTheBug ./cmd/api

## docs: regenerate the Swagger spec in docs/ from the handlers' annotations.
docs:
	$(GO) tool swag init --quiet -g cmd/api/main.go -o docs

## lint: gofmt and go vet.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## build: the API and devstack binaries, into bin/.
build:
	$(GO) build -o $(BIN)/ryw-api ./cmd/api
	$(GO) build -o $(BIN)/devstack ./cmd/devstack

clean:
	rm -rf $(BIN)

help:
	@grep -E '^##' Makefile | sed 's/^## //'
