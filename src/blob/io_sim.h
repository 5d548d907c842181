/*
 * A deterministic, in-memory backend for the I/O seam: the crash simulator.
 *
 * Files live in memory with two images: what reads see now, and what a power loss would
 * leave (the durable image). A write changes the first and is remembered until an fdatasync
 * of its file makes the two equal. blob_io_sim_power_loss() plays a power cut: for each
 * unsynced write, in order, it keeps it, drops it, or tears it (each 512-byte sector kept or
 * lost on its own, the atomic unit real disks promise); files whose creation no directory
 * fsync covered may vanish. A truncation's new size is durable at once, the writes before it
 * are not (ftruncate(2) syncs nothing). Every choice comes from one seed, so a run replays
 * exactly.
 *
 * Asynchronous requests queue until blob_io_sim_run() completes them in a seeded random
 * order, then runs deferred tasks, as a core's loop would. Any operation can be made to fail:
 * the N-th with -EIO or -ENOSPC, or a write to come back short.
 */
#ifndef RINGCAS_BLOB_IO_SIM_H
#define RINGCAS_BLOB_IO_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "base/assert.h"
#include "blob/io.h"

/* A fault that makes a write return half its length instead of an errno. */
#define BLOB_IO_SIM_SHORT 1

/* Creates an empty simulated folder whose choices follow <seed>. NULL when out of memory. */
struct blob_io *blob_io_sim_create(uint64_t seed);

/* Frees everything; requests must have completed. NULL is accepted. */
void blob_io_sim_destroy(struct blob_io *io);

/*
 * Completes up to <max_steps> queued requests, each followed by the deferred tasks, and
 * returns how many completed. The caller's thread plays the core.
 */
uint32_t blob_io_sim_run(struct blob_io *io, uint32_t max_steps);

/* True when no request is queued and no task is deferred. */
bool blob_io_sim_is_idle(const struct blob_io *io);

/* Makes operation number <nth> (counting from the next one, 1-based) fail with <fault>
 * (-EIO, -ENOSPC or BLOB_IO_SIM_SHORT). 0 clears it. */
void blob_io_sim_fail_at(struct blob_io *io, uint64_t nth, int fault);

/* While <full>, every write and block reservation fails with -ENOSPC, as on a full disk
 * (creating a file still works). */
void blob_io_sim_full(struct blob_io *io, bool full);

/* While <read_only>, every open for writing, write, reservation and unlink fails with -EROFS,
 * and folder_writable says so, as a file system remounted read-only after an error. */
void blob_io_sim_read_only(struct blob_io *io, bool read_only);

/* Gives the simulated disk a size: writes and reservations that would pass it fail with
 * -ENOSPC, and the space call answers what is left (files open after unlink included).
 * 0 (the default): unlimited, and the space call answers -ENOTSUP. */
void blob_io_sim_capacity(struct blob_io *io, uint64_t bytes);

/* Other files take <bytes> of the disk (blob_io_sim_capacity): what is free shrinks, the
 * disk's size does not, as when another tenant fills a shared volume. */
void blob_io_sim_others(struct blob_io *io, uint64_t bytes);

/* A file whose last name and fd go keeps its blocks for <ns> more of real time, as on XFS,
 * which frees a deleted file's blocks in a worker a moment after its last close: the space
 * call sees them neither free nor in any file meanwhile. 0 (the default): freed at once. */
void blob_io_sim_frees_late(struct blob_io *io, uint64_t ns);

/* Makes every later request of type <op> (enum blob_io_opcode) take <ns> more nanoseconds of
 * real time when it completes: a slow disk. 0 clears it. */
void blob_io_sim_slow(struct blob_io *io, uint8_t op, uint64_t ns);

/* Operations performed so far. */
uint64_t blob_io_sim_ops(const struct blob_io *io);

/*
 * Cuts the power: unsynced writes are kept, dropped or torn, unsynced file creations may
 * vanish, every queued and later request fails with -EIO until blob_io_sim_restart().
 */
void blob_io_sim_power_loss(struct blob_io *io);

/* Boots again: every fd is closed, the disk holds what survived, I/O works. */
void blob_io_sim_restart(struct blob_io *io);

/* XORs <mask> into byte <off> of file <name> (both images). Returns 0 or -ENOENT/-ERANGE. */
MUST_CHECK int blob_io_sim_corrupt(struct blob_io *io, const char *name, uint64_t off,
                                   uint8_t mask);

/* Size of file <name> now. Returns 0 or -ENOENT. */
MUST_CHECK int blob_io_sim_size(struct blob_io *io, const char *name, uint64_t *size);
/* The bytes <name> takes on the disk: its size, or more while fallocate reserves more. */
MUST_CHECK int blob_io_sim_blocks(struct blob_io *io, const char *name, uint64_t *bytes);

/* Open file descriptors (they must return to zero). */
uint32_t blob_io_sim_open_fds(const struct blob_io *io);

/* The simulator's random generator (for tests that want the same stream). */
uint64_t blob_io_sim_rand(struct blob_io *io);

#endif /* RINGCAS_BLOB_IO_SIM_H */
