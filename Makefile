# svcwrap: build, test, demo. `make test` is what CI runs (.ci/run).

GO     ?= go
CONSUL := bin/consul

.PHONY: all build consul deps test soak demo bench clean

all: build

build:
	$(GO) build -o bin/svcwrap .

# The real Consul agent the tests and the demo run, built from tools/consul
# (a separate module). Rebuilt only when missing or older than that module.
consul: $(CONSUL)
	@echo "consul agent: $(CONSUL) is up to date"

$(CONSUL): tools/consul/go.mod tools/consul/go.sum tools/consul/main.go
	@echo "building $(CONSUL) from tools/consul (several minutes on an empty module cache)"
	mkdir -p bin
	cd tools/consul && $(GO) build -o ../../$(CONSUL).tmp .
	mv $(CONSUL).tmp $(CONSUL)
	touch $(CONSUL)

deps:
	scripts/deps.sh

# The randomized fault soak (soak_test.go, build tag `soak`) runs alone and
# with -v, so that its counts are printed whether it passes or not. `make
# test` runs a short form (about 30 s here); `make soak` a long one
# (SVCWRAP_SOAK_RUNS runs, default 200; SVCWRAP_SOAK_DURATION=30m starts no
# run after 30 minutes). SVCWRAP_SOAK_SEED=S replays from a printed seed;
# with SVCWRAP_SOAK_RUNS=1, that one run.
SOAK_TEST = $(GO) test -race -tags soak -run '^TestSoak$$' -count=1 -v

test: deps consul build
	$(GO) vet ./...
	$(GO) test -race ./...
	$(GO) vet -tags soak .
	SVCWRAP_SOAK_RUNS=24 $(SOAK_TEST) -timeout 10m .

soak: deps consul build
	SVCWRAP_SOAK_RUNS=$${SVCWRAP_SOAK_RUNS:-200} $(SOAK_TEST) -timeout 0 .

demo: deps consul build
	scripts/demo.sh

# The benchmark harness (bench/, BENCHMARKS.md): svcwrap built without -race
# against a dev agent of its own on loopback; about 25 minutes with the
# defaults. BENCH_FLAGS adds harness flags, e.g. BENCH_FLAGS='-runs 20
# -scale 100' or BENCH_FLAGS='-wrapper bin/svcwrap -wrapper other-wrapper'.
# The samples go to bench/results/latest.json. Then the Go micro-benchmarks.
bench: consul build
	mkdir -p bench/results
	$(GO) build -o bin/svcbench ./bench
	bin/svcbench -json bench/results/latest.json $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench . ./...

# Keeps bin/consul, which takes minutes to build: `rm bin/consul` for that.
clean:
	rm -f bin/svcwrap $(CONSUL).tmp
