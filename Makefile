# svcwrap: build, test, demo. `make test` is what CI runs (.ci/run).

GO     ?= go
CONSUL := bin/consul

# Install paths: `make install PREFIX=/usr DESTDIR=/tmp/pkg` puts svcwrap in
# /tmp/pkg/usr/bin and svcwrap.1 in /tmp/pkg/usr/share/man/man1.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
# Where build and man write: bin/svcwrap, bin/svcwrap.1.
OUT     ?= bin
# What --version says. GOFLAGS=-buildvcs=false on some machines leaves the
# build info without a revision, so the build stamps it; empty (no git):
# svcwrap falls back to the build info.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

.PHONY: all build man install uninstall consul deps test soak demo bench clean

all: build

# How svcwrap is built for use (BENCHMARKS.md, "Footprint"): a thousand
# wrappers on a host each map the binary, and what they touch of it is most of
# their RSS. CGO_ENABLED=0 links it statically (no libc or dynamic loader
# mapped: 1.4 MiB of RSS less each, and a faster start); the
# nethttpomithttp2 tag leaves out net/http's HTTP/2, which no agent call
# needs (HTTP/1.1 to the agent, with or without TLS: 0.35 MiB less);
# -trimpath keeps the build's paths out of the binary.
BUILDFLAGS ?= -trimpath -tags nethttpomithttp2

build:
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -ldflags "-X main.version=$(VERSION)" -o $(OUT)/svcwrap .

# svcwrap(1), from the command itself by cobra's doc generator (mangen.go,
# behind the mangen build tag).
man:
	mkdir -p $(OUT)
	$(GO) run -ldflags "-X main.version=$(VERSION)" -tags mangen . $(OUT)/svcwrap.1

install: build man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(OUT)/svcwrap $(DESTDIR)$(BINDIR)/svcwrap
	install -m 0644 $(OUT)/svcwrap.1 $(DESTDIR)$(MANDIR)/man1/svcwrap.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/svcwrap $(DESTDIR)$(MANDIR)/man1/svcwrap.1

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
# test` runs a short form (about 40 s here); `make soak` a long one
# (SVCWRAP_SOAK_RUNS runs, default 200; SVCWRAP_SOAK_DURATION=30m starts no
# run after 30 minutes; SVCWRAP_SOAK_AGENT=failover draws only that fault).
# SVCWRAP_SOAK_SEED=S replays from a printed seed; with SVCWRAP_SOAK_RUNS=1,
# that one run.
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
# against a dev agent of its own on loopback, the scale runs on an idle host
# and on one whose cores are taken by busy loops; about 27 minutes with the
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
	rm -f $(OUT)/svcwrap $(OUT)/svcwrap.1 $(CONSUL).tmp
