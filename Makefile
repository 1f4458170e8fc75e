# kelp build. Every user-facing target depends on setup and build, so each works alone
# on a fresh clone: `make demo`, `make test`, `make bench`.
SHELL := /bin/bash
.DEFAULT_GOAL := build

CLANG    ?= clang-19
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
BPF_CFLAGS := -O2 -g -target bpf -Wall -Werror -Wno-unused-function \
	-I bpf -I bpf/include -I $(ARCH_INC) -D__TARGET_ARCH_x86
BPF_OUT  := build/bpf

# chromium: the node page's browser test (test/e2e/node-page.test.ts) runs it headless.
APT_PKGS := clang-19 llvm-19 libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 iputils-ping iptables \
	iperf3 containernetworking-plugins jq netcat-openbsd procps containerd runc podman conmon busybox-static \
	chromium
NODE_GYP := node_modules/.bin/node-gyp

BPF_SRCS     := $(wildcard bpf/*.c)
BPF_FIXTURES := $(wildcard test/fixtures/bpf/*.c)
BPF_BENCH    := $(wildcard bench/bpf/*.c)
BPF_OBJS := $(patsubst bpf/%.c,$(BPF_OUT)/%.o,$(BPF_SRCS)) \
	$(patsubst test/fixtures/bpf/%.c,$(BPF_OUT)/fixture_%.o,$(BPF_FIXTURES)) \
	$(patsubst bench/bpf/%.c,$(BPF_OUT)/bench_%.o,$(BPF_BENCH))
BPF_HDRS := $(shell find bpf -name '*.h')
NATIVE_SRCS := $(wildcard native/*.cc native/*.h) binding.gyp
TS_SRCS := $(shell find src -name '*.ts')

.PHONY: setup build bpf addon ts cni test demo bench clean typecheck

# Installs only what is missing: a second run costs two dpkg queries and a stat.
setup: .stamp-npm
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# The Kubernetes tests drive real kubectl; where the machine has none, Debian's (1.20) stands in.
	@command -v kubectl >/dev/null || { echo "setup: installing kubernetes-client (kubectl)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; }

.stamp-npm: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

build: setup bpf addon ts cni

# Layout 2 of kelp_ct4 and kelp_snat4 (KELP_TEST_LAYOUT_V2 in bpf/lib/): the objects of an agent
# one layout ahead, for test/e2e/layout-upgrade.test.ts. Never loaded by the agent as built.
BPF_LAYOUT_V2 := $(patsubst bpf/%.c,$(BPF_OUT)/layout-v2/%.o,$(BPF_SRCS))

bpf: $(BPF_OBJS) $(BPF_LAYOUT_V2)

$(BPF_OUT)/%.o: bpf/%.c $(BPF_HDRS) | $(BPF_OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BPF_OUT)/fixture_%.o: test/fixtures/bpf/%.c $(BPF_HDRS) | $(BPF_OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BPF_OUT)/bench_%.o: bench/bpf/%.c $(BPF_HDRS) | $(BPF_OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BPF_OUT)/layout-v2/%.o: bpf/%.c $(BPF_HDRS) | $(BPF_OUT)/layout-v2
	$(CLANG) $(BPF_CFLAGS) -DKELP_TEST_LAYOUT_V2 -c $< -o $@

$(BPF_OUT) $(BPF_OUT)/layout-v2:
	mkdir -p $@

addon: build/Release/kelp.node

# node-gyp `rebuild` would wipe build/ (and the BPF objects in it): configure + build only.
build/Release/kelp.node: $(NATIVE_SRCS) .stamp-npm
	$(NODE_GYP) configure --nodedir=/usr >/dev/null
	$(NODE_GYP) build --nodedir=/usr >/dev/null

ts: .stamp-ts

# dist/ is rebuilt whole: a module moved to a folder (x.ts -> x/index.ts) must not leave an old
# dist/x.js behind, which Node would load first.
.stamp-ts: $(TS_SRCS) tsconfig.json .stamp-npm
	rm -rf dist
	node_modules/.bin/tsc -p tsconfig.json
	@touch $@

cni: bin/kelp-cni

# Static: no dynamic loader at every exec, ~0.2 ms of each CNI call here.
bin/kelp-cni: native/cni/kelp-cni.c
	cc -O2 -Wall -Wextra -Werror -static -o $@ $<

typecheck: .stamp-npm
	node_modules/.bin/tsc -p tsconfig.test.json

test: build
	node_modules/.bin/tsc -p tsconfig.test.json
	node_modules/.bin/vitest run

# The demo shows its own steps only: the build's output goes to a log, shown if it fails.
demo:
	@mkdir -p build
	@echo "make demo: installing and building (log: build/demo-build.log)"
	@$(MAKE) --no-print-directory build > build/demo-build.log 2>&1 || { cat build/demo-build.log; echo "make demo: the build failed (log above)"; exit 1; }
	@node_modules/.bin/vite-node scripts/demo.ts

BENCH_TOOLS := $(patsubst bench/tools/%.c,build/bench/%,$(wildcard bench/tools/*.c))

build/bench/%: bench/tools/%.c
	@mkdir -p $(@D)
	cc -O2 -Wall -Wextra -Werror -o $@ $<

bench: build $(BENCH_TOOLS)
	node_modules/.bin/vite-node bench/main.ts

clean:
	rm -rf build dist bin/kelp-cni .stamp-ts
