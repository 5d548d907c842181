/*
 * Synchronous helpers on top of the async API, for the CLI and simple callers: one ring on
 * the calling thread, one HTTP/2 connection opened on first use, and functions that start a
 * call and drive the ring until it is done. Each returns 0 or -errno and fills a struct
 * client_result with the gRPC status and a one-line message.
 *
 * Every helper is bounded in time: connect and I/O timeouts always apply (timeout_ms), and
 * each call also carries the overall deadline (deadline_ms) when one is given.
 */
#ifndef RINGCAS_CLIENT_SYNC_H
#define RINGCAS_CLIENT_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/call.h"
#include "client/cas.h"
#include "client/client.h"
#include "client/conn.h"
#include "client/digest.h"
#include "client/http.h"
#include "client/unary.h"
#include "ring/core.h"

struct client_sync_options {
    const char *server;   /* "HOST:PORT" */
    const char *instance; /* instance name, "" for none */
    uint32_t timeout_ms;  /* connect, and each read and write; > 0 */
    uint32_t deadline_ms; /* each call's overall deadline; 0: none */
};

struct client_sync {
    /* private: */
    struct ring_core *core;
    struct client cl;
    struct client_addr addr;
    struct client_sync_options o;
    struct client_conn_options conn_opts;
    struct client_conn conn;
    bool conn_open;   /* conn is opening or open */
    bool conn_closed; /* its on_close ran (set by the callback) */
    int conn_reason;  /* on_close's reason */
};

/*
 * Creates a session: resolves the server address and creates the ring on the calling thread.
 * Returns 0 with *<out> set, or -errno with one line in <why>: io_uring unavailable (the
 * ring's explanation), a bad (-EINVAL) or unresolvable (-EHOSTUNREACH) address, -ENOMEM.
 */
MUST_CHECK int client_sync_create(const struct client_sync_options *o, struct client_sync **out,
                                  char *why, size_t why_size);

/* Closes the connection, waits for everything to finish, destroys the ring and <s>. NULL is
 * accepted. */
void client_sync_destroy(struct client_sync *s);

/* GetCapabilities: on success u->response is a ServerCapabilities (<u> initialised by the
 * caller with client_unary_init(u, &s->cl)). */
MUST_CHECK int client_sync_capabilities(struct client_sync *s, struct client_unary *u,
                                        struct client_result *r);

/* FindMissingBlobs of <count> digests: sets missing[i] for each. */
MUST_CHECK int client_sync_find_missing(struct client_sync *s, const struct client_digest *digests,
                                        size_t count, bool *missing, struct client_result *r);

/*
 * BatchUpdateBlobs of <count> blobs: statuses[i] receives each blob's gRPC status (0 OK) and
 * messages[i] (may be NULL) its message, copied into CLIENT_MESSAGE_MAX bytes.
 */
MUST_CHECK int client_sync_batch_update(struct client_sync *s,
                                        const struct client_batch_blob *blobs, size_t count,
                                        int *statuses, char (*messages)[CLIENT_MESSAGE_MAX],
                                        struct client_result *r);

/* Uploads the file open on <fd> whose digest is <d> (hashed by the caller). */
MUST_CHECK int client_sync_put_fd(struct client_sync *s, int fd, const struct client_digest *d,
                                  bool zstd, struct client_result *r);

/*
 * Downloads <d> and writes it to <out_fd> (a file or a pipe) through the ring, each write
 * with the I/O timeout; the download pauses while the writes lag behind. The bytes are
 * verified against <d>: on -EBADMSG the caller must discard what was written.
 */
MUST_CHECK int client_sync_get_fd(struct client_sync *s, const struct client_digest *d, bool zstd,
                                  int out_fd, struct client_result *r);

/* GET <path> over HTTP/1.1 on the same server; <h> is the caller's (client_http_deinit). */
MUST_CHECK int client_sync_http_get(struct client_sync *s, const char *path, struct client_http *h);

#endif /* RINGCAS_CLIENT_SYNC_H */
