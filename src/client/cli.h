/*
 * The client commands of the ringcas binary: put, get and stat (docs/cli.md). src/main.c
 * parses the flags and calls these; each returns the process exit status and prints one
 * line per error on stderr.
 */
#ifndef RINGCAS_CLIENT_CLI_H
#define RINGCAS_CLIENT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses of put, get and stat (docs/cli.md). */
enum client_exit {
    CLIENT_EXIT_OK = 0,
    CLIENT_EXIT_FAILURE = 1,     /* anything not listed below */
    CLIENT_EXIT_USAGE = 2,       /* bad flags or arguments, a file that cannot be read */
    CLIENT_EXIT_NOT_FOUND = 3,   /* the server does not have the blob (NOT_FOUND) */
    CLIENT_EXIT_TIMEOUT = 4,     /* a connect, read, write or the deadline timed out */
    CLIENT_EXIT_UNAVAILABLE = 5, /* the server cannot be reached, or says UNAVAILABLE */
    CLIENT_EXIT_INTEGRITY = 6,   /* downloaded bytes do not match the digest, or a file
                                    changed while it was uploaded */
};

struct client_cli_options {
    const char *server;   /* HOST:PORT */
    const char *instance; /* instance name, "" for none */
    uint64_t timeout_ms;  /* connect and each read and write */
    uint64_t deadline_ms; /* each call's overall deadline; 0: none */
    bool compress;        /* put/get: compressed-blobs/zstd */
    bool force;           /* put: upload without asking FindMissingBlobs first */
    uint64_t batch_max;   /* put: files up to this size go in BatchUpdateBlobs (0: none) */
    const char *output;   /* get: file to write ("-" or NULL: stdout) */
};

/* Fills <o> with the defaults: 127.0.0.1:8980, no instance, 30 s timeout, no deadline,
 * batches for files up to 256 KiB. */
void client_cli_options_default(struct client_cli_options *o);

/* The exit status for a client error <err> (0 or -errno). */
int client_cli_exit_code(int err);

/* ringcas put FILE...: prints hash/size for each file, in order. */
int client_cli_put(const struct client_cli_options *o, char *const *files, size_t count);

/* ringcas get HASH/SIZE: writes the blob to o->output or stdout. */
int client_cli_get(const struct client_cli_options *o, const char *digest);

/* ringcas stat: the server's capabilities and a summary of its counters. */
int client_cli_stat(const struct client_cli_options *o);

/*
 * Sums the samples of metric <name> (any labels) in Prometheus text <text>/<len>; returns
 * whether any sample was found. For stat and its tests.
 */
bool client_cli_metric_sum(const char *text, size_t len, const char *name, double *sum);

#endif /* RINGCAS_CLIENT_CLI_H */
