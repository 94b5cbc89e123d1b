# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# pytm-bpf: tracemalloc from outside, through eBPF.
#   make            build ./pytm-bpf
#   make deps       install the Debian packages the build and tests need
#   make test       deps + build + every test (C unit tests, then pytest)
#   make check      the tests without deps
#   make bench      side-by-side slowdowns: pytm-bpf against tracemalloc
#   make demo       deps + build + trace a sample workload + report
#   make install    PREFIX=/usr/local DESTDIR=
# V=1 shows the commands.

OUTPUT := .output
CLANG ?= clang
LLVM_STRIP ?= llvm-strip
BPFTOOL ?= bpftool
CC ?= cc
PYTHON ?= /usr/bin/python3
PREFIX ?= /usr/local
# Where Debian's python3 looks for packages under PREFIX.
PYTHON_SITE ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/$(shell $(PYTHON) -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null || echo python3)/dist-packages)
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

DEB_PACKAGES := make gcc clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev \
	binutils pkg-config python3 python3-pytest python3-numpy util-linux procps \
	libmicrohttpd-dev prometheus golang-go chromium libncurses-dev tmux \
	libclang-rt-14-dev

LIBBPF_CFLAGS := $(shell pkg-config --cflags libbpf 2>/dev/null)
LIBBPF_LIBS := $(shell pkg-config --libs libbpf 2>/dev/null || echo -lbpf)
CFLAGS ?= -g -O2
# user/ by pipeline stage (see README, Layout); headers by plain name.
USER_DIRS := $(sort $(dir $(wildcard user/*/*.c user/*/*.h)))
CFLAGS += -Wall -Wextra -Wno-unused-parameter -Werror -std=gnu11 \
	  -I$(OUTPUT) -Ibpf -Ipage $(addprefix -iquote ,$(USER_DIRS)) $(LIBBPF_CFLAGS)
MHD_LIBS := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
NCURSES_LIBS := $(shell pkg-config --libs ncursesw 2>/dev/null || echo -lncursesw -ltinfo)
LDLIBS += $(LIBBPF_LIBS) $(MHD_LIBS) $(NCURSES_LIBS) -lelf -lz -lpthread -lm
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) \
	      -Wall -Werror -I$(OUTPUT) -Ibpf

# page/: the sampler that runs inside the target, in the injected page.
PAGE_CFLAGS := -O2 -ffreestanding -fno-builtin -fPIC -fvisibility=hidden \
	       -fno-stack-protector -fno-asynchronous-unwind-tables \
	       -fno-unwind-tables -fno-jump-tables -fno-unroll-loops \
	       -fcf-protection=none -Wall -Wextra -Werror -std=gnu11 -Ipage -Ibpf
PAGE_BLOB := $(OUTPUT)/page/blob.o

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(OUTPUT)/%.bpf.o,$(BPF_SRCS))
SKELS := $(patsubst bpf/%.bpf.c,$(OUTPUT)/%.skel.h,$(BPF_SRCS))
USER_SRCS := $(wildcard user/*/*.c)
USER_HDRS := $(wildcard user/*/*.h)
USER_OBJS := $(patsubst %.c,$(OUTPUT)/%.o,$(USER_SRCS))
# Everything but main(): what the unit tests link.
# The recorder's ring is read by the tracer too (user/session/rec_drain.c).
PAGE_RING := $(OUTPUT)/page/ring.o
LIB_OBJS := $(filter-out $(OUTPUT)/user/cli/pytm-bpf.o,$(USER_OBJS)) $(PAGE_BLOB) $(PAGE_RING)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(OUTPUT)/tests/%,$(UNIT_SRCS))

ifeq ($(V),1)
	Q =
	msg =
else
	Q = @
	msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

.DEFAULT_GOAL := all
.PHONY: all deps test check unit unit-san fuzz fuzz-check pytest bench demo install clean

all: pytm-bpf

deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y $(DEB_PACKAGES)

$(OUTPUT) $(OUTPUT)/tests:
	$(Q)mkdir -p $@

# vmlinux.h from the running kernel's BTF; the checked-in copy otherwise.
$(OUTPUT)/vmlinux.h: | $(OUTPUT)
	$(call msg,GEN,$@)
	$(Q)if [ -r /sys/kernel/btf/vmlinux ] && \
	    $(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp 2>/dev/null; \
	then mv $@.tmp $@; else rm -f $@.tmp; cp vmlinux/vmlinux.h $@; fi

$(OUTPUT)/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) $(OUTPUT)/vmlinux.h | $(OUTPUT)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(Q)$(LLVM_STRIP) -g $@ 2>/dev/null || true

$(OUTPUT)/%.skel.h: $(OUTPUT)/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@

# The page runs at whatever address the target gives it: PC-relative only.
$(OUTPUT)/page/%.o: page/%.c page/page.h page/recorder.h page/ring.h
	$(call msg,CC-PAGE,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CLANG) $(PAGE_CFLAGS) -c $< -o $@
	$(Q)readelf -rW $@ | awk '/R_X86_64_/ && $$3 !~ /^R_X86_64_(PC32|PLT32)$$/ \
		{ print "absolute relocation in the page: " $$0; bad = 1 } END { exit bad }'

$(OUTPUT)/page/sites.o: page/sites.S
	$(call msg,AS-PAGE,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CLANG) -c $< -o $@

PAGE_OBJS := $(addprefix $(OUTPUT)/page/,sampler.o recorder.o ring.o sites.o)
$(OUTPUT)/page/page.elf: $(PAGE_OBJS) page/page.lds
	$(call msg,LD-PAGE,$@)
	$(Q)$(LD) -T page/page.lds -o $@ $(PAGE_OBJS)

$(OUTPUT)/page/page.bin: $(OUTPUT)/page/page.elf
	$(Q)objcopy -O binary $< $@

# Page offsets of the entry points and sites, for the tracer.
$(OUTPUT)/page/page_syms.h: $(OUTPUT)/page/page.elf
	$(call msg,GEN,$@)
	$(Q)nm $< | awk '$$3 ~ /^pytm_(tramp|site|child)_|^pytm_reftrace$$/ \
		{ printf "#define PYTM_SYM_%s 0x%s\n", $$3, $$1 }' > $@.tmp && mv $@.tmp $@

$(PAGE_BLOB): page/blob.S $(OUTPUT)/page/page.bin
	$(call msg,AS,$@)
	$(Q)$(CC) -c -DPYTM_PAGE_BIN='"$(OUTPUT)/page/page.bin"' $< -o $@

$(OUTPUT)/user/%.o: user/%.c $(USER_HDRS) bpf/pytm.h page/page.h $(OUTPUT)/page/page_syms.h $(SKELS) | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

pytm-bpf: $(USER_OBJS) $(PAGE_BLOB) $(PAGE_RING)
	$(call msg,BINARY,$@)
	$(Q)$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

$(OUTPUT)/tests/%: tests/unit/%.c $(LIB_OBJS) | $(OUTPUT)/tests
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) -Itests/unit $< $(LIB_OBJS) $(LDLIBS) -o $@

# C unit tests print "N passed, N failed" each; tests/run_unit.sh sums them.
unit: $(UNIT_BINS)
	$(Q)sh tests/run_unit.sh $(UNIT_BINS)

pytest: all $(OUTPUT)/tests/librec_hook.so
	$(Q)$(PYTHON) -m pytest -ra tests

# The recorder's walk as a library that real interpreters load (tests/test_recorder.py).
$(OUTPUT)/tests/librec_hook.so: tests/unit/rec_hook.c page/recorder.c page/recorder.h \
		page/ring.c page/ring.h user/discovery/pyoffsets.c \
		user/discovery/pyoffsets_table.h bpf/pytm.h | $(OUTPUT)/tests
	$(call msg,CC-SO,$@)
	$(Q)$(CC) -shared -fPIC -O2 -Wall -Wextra -Werror -Wno-unused-parameter -Ibpf -Ipage \
		-iquote user/discovery tests/unit/rec_hook.c page/recorder.c page/ring.c \
		user/discovery/pyoffsets.c -o $@

# The user-space code again, with AddressSanitizer and UndefinedBehaviorSanitizer
# (clang's), and coverage for libFuzzer: the unit tests and the fuzz targets
# link it. Any report ends the program (-fno-sanitize-recover).
SAN := $(OUTPUT)/san
SAN_FLAGS := -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all \
	     -fno-omit-frame-pointer
SAN_CFLAGS := $(filter-out -O2,$(CFLAGS)) -O1 $(SAN_FLAGS)
SAN_LIB_OBJS := $(patsubst $(OUTPUT)/%,$(SAN)/%,$(filter-out $(OUTPUT)/user/cli/pytm-bpf.o,$(USER_OBJS))) \
		$(PAGE_BLOB) $(PAGE_RING)
SAN_UNIT_BINS := $(patsubst tests/unit/%.c,$(SAN)/tests/%,$(UNIT_SRCS))
# No suppression: leaks are reports too (detect_leaks is on by default).
SAN_ENV := ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
# The line-table test compares every stdlib code object of 7 interpreters:
# a twentieth of them under the sanitizers (the full run is make unit's).
SAN_UNIT_ENV := $(SAN_ENV) PYTM_LINETABLE_EVERY=20
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(SAN)/fuzz/%,$(FUZZ_SRCS))
# Seconds per fuzz target: make fuzz FUZZ_TIME=600
FUZZ_TIME ?= 60

$(SAN)/user/%.o: user/%.c $(USER_HDRS) bpf/pytm.h page/page.h $(OUTPUT)/page/page_syms.h $(SKELS)
	$(call msg,CC-SAN,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CLANG) $(SAN_CFLAGS) -c $< -o $@

$(SAN)/tests/%: tests/unit/%.c $(SAN_LIB_OBJS)
	$(call msg,CC-SAN,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CLANG) $(SAN_CFLAGS) -Itests/unit $< $(SAN_LIB_OBJS) $(LDLIBS) -o $@

$(SAN)/fuzz/%: tests/fuzz/%.c $(SAN_LIB_OBJS)
	$(call msg,CC-FUZZ,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CLANG) $(SAN_CFLAGS) -fsanitize=fuzzer $< $(SAN_LIB_OBJS) $(LDLIBS) -o $@

# The unit tests under the sanitizers.
unit-san: $(SAN_UNIT_BINS)
	$(Q)$(SAN_UNIT_ENV) sh tests/run_unit.sh $(SAN_UNIT_BINS)

# Each fuzz target for FUZZ_TIME seconds from its corpus (tests/fuzz/corpus/);
# what they find is left in $(SAN)/fuzz-findings/.
fuzz: $(FUZZ_BINS)
	$(Q)$(SAN_ENV) sh tests/run_fuzz.sh $(FUZZ_TIME) $(SAN)/fuzz-findings $(FUZZ_BINS)

# CI: every corpus input once (the regression inputs), then a short run each.
fuzz-check: $(FUZZ_BINS)
	$(Q)$(SAN_ENV) sh tests/run_fuzz.sh 10 $(SAN)/fuzz-findings $(FUZZ_BINS)

check: all unit unit-san fuzz-check pytest

test: deps
	$(MAKE) check

# Each driver prints its ratios measured side by side in one run.
bench: all
	$(Q)$(PYTHON) tools/bench.py
	$(Q)$(PYTHON) tools/bench.py --python /usr/bin/python3.11
	$(Q)$(PYTHON) tools/bench.py --pyenv 3.12.1
	$(Q)$(PYTHON) tools/bench.py --workload freelist --pyenv 3.13.0 --iterations 200000
	$(Q)if [ -f tools/bench_events.py ]; then $(PYTHON) tools/bench_events.py; fi
	$(Q)if [ -f tools/bench_procs.py ]; then $(PYTHON) tools/bench_procs.py; fi
	$(Q)$(PYTHON) tools/bench_fork.py
	$(Q)$(PYTHON) tools/bench_scale.py
	$(Q)$(PYTHON) tools/bench_kill.py
	$(Q)$(PYTHON) tools/bench_serve.py

demo: deps
	$(MAKE) all
	$(Q)sh tools/demo.sh

install: all
	install -D -m 0755 pytm-bpf $(DESTDIR)$(PREFIX)/sbin/pytm-bpf
	install -D -m 0644 pytm-bpf.8 $(DESTDIR)$(PREFIX)/share/man/man8/pytm-bpf.8
	mkdir -p $(DESTDIR)$(PYTHON_SITE)/pytm_bpf
	install -m 0644 python/pytm_bpf/*.py $(DESTDIR)$(PYTHON_SITE)/pytm_bpf/

clean:
	$(call msg,CLEAN)
	$(Q)rm -rf $(OUTPUT) pytm-bpf

.DELETE_ON_ERROR:
.SECONDARY:
