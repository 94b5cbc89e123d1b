/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Turn the BPF maps of one process into a tracemalloc snapshot. */
#ifndef __PYTM_COLLECT_H
#define __PYTM_COLLECT_H

#include <stdint.h>
#include <sys/types.h>
#include "snapshot.h"

struct resolver;
struct recorder;

/*
 * Snapshot of the live blocks of PID: BLOCKS_FDS (NBLOCKS maps, the
 * generations of its live-block map: see PYTM_GENS) and STACKS_FD are the
 * maps, FRAMES the traceback limit, and with REC the recorder's blocks too
 * (the caller holds its lock: recorder__lock). NULL with errno set on
 * failure.
 */
struct snapshot *collect__snapshot(const int *blocks_fds, int nblocks, int stacks_fd, pid_t pid,
				   int frames, struct resolver *r, struct recorder *rec);

/*
 * --peak: the live blocks of PID as they were at PEAK_NS (bpf_ktime_get_ns):
 * those of BLOCKS_FDS born by then, and those of FREED_FD (the peak_freed
 * map) freed since.
 */
struct snapshot *collect__peak(const int *blocks_fds, int nblocks, int freed_fd, int stacks_fd,
			       pid_t pid, uint64_t peak_ns, int frames, struct resolver *r);
/*
 * The same for a recording process: the recorder's mark (its lock held),
 * its blocks live then next to BPF's; *PEAK_NS the mark's time (0: none
 * yet, an empty snapshot).
 */
struct snapshot *collect__rec_peak(const int *blocks_fds, int nblocks, int freed_fd,
				   int stacks_fd, pid_t pid, uint64_t *peak_ns, int frames,
				   struct resolver *r, struct recorder *rec);

/*
 * Sampled mode: the allocations of PID since attach, from the map
 * ALLOCS_FD, as one estimated trace per (domain, traceback): count the
 * objects, size the bytes they stand for.
 */
struct snapshot *collect__allocs(int allocs_fd, int stacks_fd, pid_t pid,
				 int frames, struct resolver *r);

#endif /* __PYTM_COLLECT_H */
