/*
 * `ringcas fsck --dir DIR`: an offline check of a data folder. Every record of every segment
 * is read and its checksums verified (the footer is not trusted: records are scanned from the
 * header), every committed blob is read back chunk by chunk, decoded and hashed against its
 * digest, and every sealed segment's footer is compared with its records. Nothing is changed.
 *
 * An unsealed segment is no corruption: a server leaves its active segments unsealed when it
 * stops, and the next start seals them from a scan. One whose valid records are followed by
 * zeros only (or an empty file) counts as active; one with other bytes there, a record or a
 * seal that a crash tore, counts as a torn tail, which recovery cuts.
 *
 * Neither is a commit whose first chunks were in a segment that eviction took (the server's
 * lookups miss it): it is counted as evicted. A chunk in a segment missing where eviction
 * cannot have taken it (a hole: lost, or set aside by recovery) makes a bad blob.
 */
#ifndef RINGCAS_BLOB_FSCK_H
#define RINGCAS_BLOB_FSCK_H

#include <stdint.h>
#include <stdio.h>

#include "base/assert.h"
#include "blob/io.h"

struct blob_fsck_report {
    uint64_t segments;        /* segment files */
    uint64_t sealed;          /* with a valid trailer and footer */
    uint64_t records;         /* records whose checksums passed */
    uint64_t blobs_ok;        /* commit records whose blob decoded to its digest and size */
    uint64_t evicted_blobs;   /* commits whose oldest chunks' segments were evicted (not bad) */
    uint64_t corrupt_records; /* records with a bad checksum inside the valid part */
    uint64_t bad_blobs;       /* commits whose chunks are missing, corrupt or mismatch */
    uint64_t bad_segments;    /* unreadable headers, footers that disagree with records */
    uint64_t active;          /* unsealed, valid records then only zeros (a clean stop) */
    uint64_t torn_tails;      /* unsealed, other bytes after the records (a crash; not corrupt) */
    uint64_t bytes;           /* bytes of segment files */
};

/*
 * Checks every segment reachable through <io>, writing one line per problem to <log> (may be
 * NULL). Returns 0 when the check ran (see the report for what it found) or -errno when the
 * folder could not be listed. Blocking; any thread but a core's.
 */
MUST_CHECK int blob_fsck_run(struct blob_io *io, struct blob_fsck_report *out, FILE *log);

/* Prints the report as one summary line. */
void blob_fsck_print(const struct blob_fsck_report *r, const char *dir, FILE *out);

/*
 * The subcommand: checks <dir> and prints the summary to <out>. Returns the exit status:
 * 0 clean, 1 corruption found, 2 the check could not run.
 */
int blob_fsck_main(const char *dir, FILE *out);

#endif /* RINGCAS_BLOB_FSCK_H */
