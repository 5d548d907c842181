/*
 * GetCapabilities and FindMissingBlobs requests, built with the generated protobuf-c types.
 */
#include "client/cas.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "proto/wire.h"

#define RE_PREFIX "/build.bazel.remote.execution.v2."
#define HEX_LEN   (2 * CLIENT_HASH_SIZE)

/* One digest of a FindMissingBlobs request and its hex text. */
struct find_entry {
    Build__Bazel__Remote__Execution__V2__Digest d; /* the message */
    char hex[HEX_LEN + 1];                         /* d.hash points here */
};

/* An element of the request's array of message pointers. */
struct find_ptr {
    Build__Bazel__Remote__Execution__V2__Digest *d; /* into a struct find_entry */
};

int client_cas_capabilities_start(struct client_unary *u, struct client_conn *conn,
                                  const char *instance, const struct client_call_options *o)
{
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req;
    build__bazel__remote__execution__v2__get_capabilities_request__init(&req);
    req.instance_name = (char *)(uintptr_t)instance;
    struct client_unary_options uo = {
        .call = *o,
        .path = RE_PREFIX "Capabilities/GetCapabilities",
        .request = &req.base,
        .response_desc = &build__bazel__remote__execution__v2__server_capabilities__descriptor,
    };
    return client_unary_start(u, conn, &uo);
}

int client_cas_find_missing_start(struct client_unary *u, struct client_conn *conn,
                                  const char *instance, const struct client_digest *digests,
                                  size_t count, const struct client_call_options *o)
{
    if (count > CLIENT_CAS_FIND_MAX) return -EINVAL;
    struct find_entry *es = calloc(count ? count : 1, sizeof(*es));
    /* protobuf-c wants an array of pointers to the messages. */
    struct find_ptr *ptrs = calloc(count ? count : 1, sizeof(*ptrs));
    int rc = -ENOMEM;
    if (!es || !ptrs) goto err_free;
    for (size_t i = 0; i < count; i++) {
        build__bazel__remote__execution__v2__digest__init(&es[i].d);
        proto_hex_encode(digests[i].hash, CLIENT_HASH_SIZE, es[i].hex);
        es[i].d.hash = es[i].hex;
        es[i].d.size_bytes = (int64_t)digests[i].size;
        ptrs[i].d = &es[i].d;
    }
    Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest req;
    build__bazel__remote__execution__v2__find_missing_blobs_request__init(&req);
    req.instance_name = (char *)(uintptr_t)instance;
    req.n_blob_digests = count;
    STATIC_ASSERT(sizeof(struct find_ptr) == sizeof(void *), "an array of pointers");
    req.blob_digests = &ptrs->d;
    struct client_unary_options uo = {
        .call = *o,
        .path = RE_PREFIX "ContentAddressableStorage/FindMissingBlobs",
        .request = &req.base,
        .response_desc =
            &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
    };
    /* The request is packed at start: the temporary arrays can go right after. */
    rc = client_unary_start(u, conn, &uo);
err_free:
    free(ptrs);
    free(es);
    return rc;
}

/* One blob of a BatchUpdateBlobs request, its digest and the digest's hex text. */
struct batch_entry {
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request r; /* the message */
    Build__Bazel__Remote__Execution__V2__Digest d;                           /* r.digest */
    char hex[HEX_LEN + 1];                                                   /* d.hash */
};

struct batch_ptr {
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *r; /* an entry's */
};

int client_cas_batch_update_start(struct client_unary *u, struct client_conn *conn,
                                  const char *instance, const struct client_batch_blob *blobs,
                                  size_t count, const struct client_call_options *o)
{
    if (count > CLIENT_CAS_FIND_MAX) return -EINVAL;
    struct batch_entry *es = calloc(count ? count : 1, sizeof(*es));
    struct batch_ptr *ptrs = calloc(count ? count : 1, sizeof(*ptrs));
    int rc = -ENOMEM;
    if (!es || !ptrs) goto err_free;
    for (size_t i = 0; i < count; i++) {
        struct batch_entry *e = &es[i];
        build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(&e->r);
        build__bazel__remote__execution__v2__digest__init(&e->d);
        proto_hex_encode(blobs[i].digest.hash, CLIENT_HASH_SIZE, e->hex);
        e->d.hash = e->hex;
        e->d.size_bytes = (int64_t)blobs[i].digest.size;
        e->r.digest = &e->d;
        e->r.data.data = (uint8_t *)(uintptr_t)blobs[i].data;
        e->r.data.len = blobs[i].len;
        e->r.compressor = blobs[i].zstd
                              ? BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD
                              : BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__IDENTITY;
        ptrs[i].r = &e->r;
    }
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest req;
    build__bazel__remote__execution__v2__batch_update_blobs_request__init(&req);
    req.instance_name = (char *)(uintptr_t)instance;
    req.n_requests = count;
    STATIC_ASSERT(sizeof(struct batch_ptr) == sizeof(void *), "an array of pointers");
    req.requests = &ptrs->r;
    struct client_unary_options uo = {
        .call = *o,
        .path = RE_PREFIX "ContentAddressableStorage/BatchUpdateBlobs",
        .request = &req.base,
        .response_desc =
            &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
    };
    /* Packed at start (the data is copied): the temporary arrays can go right after. */
    rc = client_unary_start(u, conn, &uo);
err_free:
    free(ptrs);
    free(es);
    return rc;
}

/* True when the message digest <m> names <d>. */
static bool digest_is(const Build__Bazel__Remote__Execution__V2__Digest *m,
                      const struct client_digest *d)
{
    uint8_t hash[CLIENT_HASH_SIZE];
    if (!m || !m->hash || strlen(m->hash) != HEX_LEN) return false;
    if (proto_hex_decode(m->hash, HEX_LEN, hash) < 0) return false;
    return m->size_bytes == (int64_t)d->size && memcmp(hash, d->hash, CLIENT_HASH_SIZE) == 0;
}

int client_cas_batch_status(const struct client_unary *u, const struct client_digest *d,
                            const char **message)
{
    const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *r =
        (const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *)u->response;
    *message = "";
    for (size_t i = 0; r && i < r->n_responses; i++) {
        const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response *e =
            r->responses[i];
        if (!e || !digest_is(e->digest, d)) continue;
        if (!e->status) return 0; /* an absent status is OK (code 0) */
        if (e->status->message) *message = e->status->message;
        return e->status->code;
    }
    *message = "the server did not report on this blob";
    return 2;
}

bool client_cas_is_missing(const struct client_unary *u, const struct client_digest *d)
{
    const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r =
        (const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *)u->response;
    if (!r) return false;
    for (size_t i = 0; i < r->n_missing_blob_digests; i++) {
        if (digest_is(r->missing_blob_digests[i], d)) return true;
    }
    return false;
}
