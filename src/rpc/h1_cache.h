/*
 * The cache routes of HTTP/1.1: GET, HEAD and PUT of CAS blobs, action cache entries and plain
 * keys, over the core's storage engine (src/blob/store.h).
 *
 * Uploads stream into the engine as they arrive, with the engine's backpressure pausing the
 * connection's receive: a body with a Content-Length and identity coding is an upload of that
 * size; a body whose decoded size is not known in advance (chunked, or Content-Encoding: zstd)
 * is an upload whose size the engine fixes at commit (BLOB_SIZE_UNKNOWN). Nothing is held in
 * memory. Downloads stream the engine's pieces from its buffers: identity bytes with
 * Content-Length, or the stored zstd frames as they are (Accept-Encoding: zstd) in chunked
 * coding. The engine holds the pieces until they are sent, so the pieces that arrived while a
 * send was in flight go out together in the next one.
 *
 * An /ac/ value is read whole before it is answered when it may be an ActionResult, and served
 * only when the ActionResult's outputs are all present; an opaque value (ccache's) is told
 * apart by its first bytes and streamed as before.
 *
 * Statuses: 404 missing, 413 over the size limit, 503 admission full or draining, 507 store
 * full, 400 digest or size mismatch or malformed zstd (rpc_h1_cache_status).
 */
#ifndef RINGCAS_RPC_H1_CACHE_H
#define RINGCAS_RPC_H1_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ring/timer.h"
#include "rpc/ac_check.h"
#include "rpc/h1.h"
#include "rpc/h1_parse.h"
#include "rpc/h1_route.h"

#define RPC_H1_AC_MAX (64ULL << 20) /* largest AC or plain-key value (the engine's) */

struct blob_core;
struct blob_upload;
struct rpc_core;
struct blob_reader;

/* One request's state, inside the connection's memory. */
struct rpc_h1_cache {
    struct rpc_h1_conn *h;                         /* the connection */
    struct rpc_core *rc;                           /* the core's protocol state */
    struct blob_core *bc;                          /* the core's engine */
    const struct rpc_h1_request *req;              /* the request (the connection's memory) */
    const struct rpc_h1_route *route;              /* its route */
    uint64_t max_blob;                             /* largest CAS blob the store takes, bytes */
    struct blob_upload *upload;                    /* the upload in progress, or NULL */
    struct blob_reader *reader;                    /* the read in progress, or NULL */
    bool reading;                                  /* a blob_read_next callback is pending */
    bool read_ended;                               /* the reader handed out its last piece */
    bool sending;                                  /* pieces are in a send (rpc_h1_stream_pieces) */
    uint32_t queued_count;                         /* pieces arrived, not yet sent */
    uint32_t sent_count;                           /* pieces in the send in flight */
    uint64_t out_bytes;                            /* bytes of both, held by the engine */
    struct iovec queued[RPC_H1_STREAM_PIECES_MAX]; /* the pieces not yet sent */
    struct iovec in_send[RPC_H1_STREAM_PIECES_MAX]; /* the pieces in the send */
    bool existed;                                   /* the entry was present when the PUT began */
    char refusal[224];                              /* a refusal's text that names sizes */
    bool zstd_out;                                  /* the response is the stored zstd frames */
    bool unsized;                                   /* the upload's size is fixed at commit */
    struct ring_timer retry;                        /* retries a read refused with -EAGAIN,
                                                     * or a PUT waiting for another upload */
    uint32_t retries;                               /* of the current read */
    bool read_waiting;                              /* the read waits for the disk queue
                                                     * or read memory (read_waiters) */
    bool put_waiting;                               /* the PUT waits: its blob is uploaded
                                                     * (upload_waiters counts it) */
    uint64_t put_wait_t0_ns;                        /* when it began waiting */
    uint32_t put_wait_ms;                           /* its next wait */
    bool ac_pending;            /* an /ac/ read awaits its verdict: nothing answered yet */
    uint64_t ac_size;           /* the /ac/ value's size, bytes */
    uint8_t *ac_value;          /* the value gathered to be decoded (pb_mem), or NULL */
    size_t ac_value_len;        /* bytes in ac_value */
    struct rpc_ac_check ac_chk; /* the completeness check of an ActionResult */
};

/* Prepares <cr> for connection <h>; once per connection. */
void rpc_h1_cache_init(struct rpc_h1_cache *cr, struct rpc_h1_conn *h);

/*
 * Serves a request routed to RPC_H1_TARGET_CAS, _AC or _KV on core <rc>'s engine (none: 503).
 * <req> and <route> stay valid until the request ends. <max_blob> bounds CAS uploads (413 past
 * it). Answers at once or later, or accepts the body (rpc_h1_body_accept). A GET or HEAD of an
 * /ac/ value that decodes as a REAPI ActionResult is answered 404 unless every blob it
 * references is present (rpc/ac_check.h); other values are served as stored.
 */
void rpc_h1_cache_start(struct rpc_h1_cache *cr, struct rpc_core *rc,
                        const struct rpc_h1_request *req, const struct rpc_h1_route *route,
                        uint64_t max_blob);

/*
 * Reads what the conditions of <req> (If-Match, If-None-Match; <head> is its head, held now)
 * name of route <route>'s representations into req->if_match_names and if_none_match_names,
 * for rpc_h1_cache_start to evaluate. Called once the request is routed to the cache, only
 * when it has a condition: a CAS blob's ETags are "<hash>" and "<hash>.zst"; other entries
 * have none, so only "*" names them.
 */
void rpc_h1_cache_conds(const struct rpc_h1_head *head, struct rpc_h1_request *req,
                        const struct rpc_h1_route *route);

/*
 * The next <len> decoded body bytes at <data>. Returns 0 when they were consumed,
 * -EINPROGRESS when they must stay unchanged until rpc_h1_body_resume(), or -ECANCELED when
 * the request was answered (an error) and no more body is wanted.
 */
int rpc_h1_cache_body(struct rpc_h1_cache *cr, const uint8_t *data, size_t len);

/* The body is complete: commit and answer. */
void rpc_h1_cache_body_end(struct rpc_h1_cache *cr);

/* A streamed piece went out: send the next one or end. */
void rpc_h1_cache_piece_sent(struct rpc_h1_cache *cr);

/* The request ended or the connection closes: release engine objects. Idempotent. */
void rpc_h1_cache_close(struct rpc_h1_cache *cr);

/*
 * The HTTP status for engine error <err> (a negative errno of src/blob/store.h) of a read,
 * or of an upload when <upload>.
 */
int rpc_h1_cache_status(int err, bool upload);

#endif /* RINGCAS_RPC_H1_CACHE_H */
