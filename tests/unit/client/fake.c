/*
 * The fake gRPC server of the client tests (fake.h): a thread that accepts one connection at
 * a time and runs an nghttp2 server session on it with blocking sockets.
 */
#include "fake.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <zstd.h>

#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "proto/bytestream.h"
#include "proto/frame.h"
#include "proto/google/bytestream/bytestream.pb-c.h"
#include "proto/google/rpc/status.pb-c.h"
#include "proto/resource.h"
#include "proto/wire.h"

#define FAKE_BLOBS_MAX 64

struct fake_blob {
    uint8_t hash[32];
    uint64_t size;
    uint8_t *data;
};

struct fstream {
    int32_t id;
    char path[128];
    uint8_t *req;
    size_t req_len;
    size_t req_cap;
    uint8_t *resp;
    size_t resp_len;
    size_t resp_off;
    size_t send_limit; /* bytes of resp that may go out (stall) */
    bool req_done;
    bool responded;
    int status;
    struct fstream *next;
};

struct fake_server {
    struct fake_config cfg;
    struct fake_stats stats;
    pthread_t th;
    int lfd;
    uint16_t port;
    atomic_bool stop;
    pthread_mutex_t mu;
    struct fake_blob blobs[FAKE_BLOBS_MAX];
    size_t nblobs;
    nghttp2_session *s;
    struct fstream *streams;
};

static void sha256(const void *p, size_t len, uint8_t out[32])
{
    unsigned n = 0;
    EVP_Digest(len ? p : "", len, out, &n, EVP_sha256(), NULL);
}

/* ---- blobs ---- */

void fake_add_blob(struct fake_server *f, const void *data, size_t len)
{
    pthread_mutex_lock(&f->mu);
    cr_assert(f->nblobs < FAKE_BLOBS_MAX);
    struct fake_blob *b = &f->blobs[f->nblobs++];
    sha256(data, len, b->hash);
    b->size = len;
    b->data = malloc(len ? len : 1);
    if (len) memcpy(b->data, data, len);
    pthread_mutex_unlock(&f->mu);
}

static struct fake_blob *find_blob(struct fake_server *f, const uint8_t *hash, uint64_t size)
{
    for (size_t i = 0; i < f->nblobs; i++) {
        if (f->blobs[i].size == size && memcmp(f->blobs[i].hash, hash, 32) == 0)
            return &f->blobs[i];
    }
    return NULL;
}

bool fake_has_blob(struct fake_server *f, const void *data, size_t len)
{
    uint8_t h[32];
    sha256(data, len, h);
    pthread_mutex_lock(&f->mu);
    struct fake_blob *b = find_blob(f, h, len);
    bool ok = b && (len == 0 || memcmp(b->data, data, len) == 0);
    pthread_mutex_unlock(&f->mu);
    return ok;
}

/* ---- responses ---- */

static nghttp2_nv nv(const char *name, const char *value)
{
    nghttp2_nv v = { (uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                     NGHTTP2_NV_FLAG_NONE };
    return v;
}

static void trailers_only(struct fake_server *f, struct fstream *st, int status)
{
    char code[12];
    snprintf(code, sizeof(code), "%d", status);
    nghttp2_nv h[] = { nv(":status", "200"), nv("content-type", "application/grpc"),
                       nv("grpc-status", code), nv("grpc-message", "fake%20says%20no") };
    nghttp2_submit_response(f->s, st->id, h, 4, NULL);
    st->responded = true;
}

static ssize_t resp_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    (void)id;
    (void)ud;
    struct fstream *st = source->ptr;
    size_t limit = st->send_limit < st->resp_len ? st->send_limit : st->resp_len;
    if (st->resp_off >= limit && st->resp_off < st->resp_len) return NGHTTP2_ERR_DEFERRED;
    size_t n = limit - st->resp_off;
    if (n > length) n = length;
    memcpy(buf, st->resp + st->resp_off, n);
    st->resp_off += n;
    if (st->resp_off == st->resp_len) {
        char code[12];
        snprintf(code, sizeof(code), "%d", st->status);
        nghttp2_nv t[] = { nv("grpc-status", code) };
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (nghttp2_submit_trailer(s, st->id, t, 1) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

/* Responds with <len> bytes of framed messages (taken over) and OK. */
static void respond(struct fake_server *f, struct fstream *st, uint8_t *body, size_t len)
{
    st->resp = body;
    st->resp_len = len;
    st->resp_off = 0;
    if (st->send_limit == 0) st->send_limit = SIZE_MAX;
    st->status = 0;
    nghttp2_nv h[] = { nv(":status", "200"), nv("content-type", "application/grpc") };
    nghttp2_data_provider dp = { .source.ptr = st, .read_callback = resp_read };
    nghttp2_submit_response(f->s, st->id, h, 2, &dp);
    st->responded = true;
}

static void respond_message(struct fake_server *f, struct fstream *st, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(5 + len);
    protobuf_c_message_pack(m, b + 5);
    proto_frame_header_put(b, (uint32_t)len);
    respond(f, st, b, 5 + len);
}

/* ---- requests ---- */

/* Calls <fn> for each complete message of the request. Returns the messages or -1. */
static int each_message(struct fstream *st, void (*fn)(const uint8_t *, size_t, void *), void *arg)
{
    size_t off = 0;
    int n = 0;
    while (off + 5 <= st->req_len) {
        uint32_t len = (uint32_t)st->req[off + 1] << 24 | (uint32_t)st->req[off + 2] << 16 |
                       (uint32_t)st->req[off + 3] << 8 | st->req[off + 4];
        if (off + 5 + len > st->req_len) return -1;
        fn(st->req + off + 5, len, arg);
        off += 5 + len;
        n++;
    }
    return off == st->req_len ? n : -1;
}

struct write_state {
    struct fake_server *f;
    char name[PROTO_RESOURCE_NAME_MAX];
    size_t name_len;
    uint8_t *data;
    size_t len;
    size_t cap;
    bool finished;
    bool bad;
};

static void write_message(const uint8_t *m, size_t len, void *arg)
{
    struct write_state *w = arg;
    struct proto_write_request r;
    proto_write_request_begin(&r, (uint32_t)len);
    const uint8_t *data;
    size_t dlen;
    size_t off = 0;
    size_t got = 0;
    while (off < len) {
        int rc = proto_write_request_feed(&r, m + off, len - off, &data, &dlen);
        if (rc <= 0) {
            w->bad = true;
            return;
        }
        if (dlen > 0) {
            if (got == 0 && r.write_offset != (int64_t)w->len) w->bad = true;
            if (w->len + dlen > w->cap) {
                w->cap = (w->len + dlen) * 2;
                w->data = realloc(w->data, w->cap);
            }
            memcpy(w->data + w->len, data, dlen);
            w->len += dlen;
            got += dlen;
        }
        off += (size_t)rc;
    }
    if (proto_write_request_end(&r) < 0) w->bad = true;
    if (r.has_name && w->name_len == 0) {
        memcpy(w->name, r.name, r.name_len);
        w->name_len = r.name_len;
    }
    if (r.finish_write) w->finished = true;
    atomic_fetch_add(&w->f->stats.write_messages, 1);
    if (r.finish_write) atomic_fetch_add(&w->f->stats.write_finished, 1);
    uint64_t max = atomic_load(&w->f->stats.write_max_data);
    if (got > max) atomic_store(&w->f->stats.write_max_data, got);
}

/* Stores a finished upload; returns the committed size or -1 when it is refused. */
static int64_t write_commit(struct fake_server *f, struct write_state *w)
{
    struct proto_resource r;
    const char *why;
    if (w->bad || !w->finished || proto_resource_parse(w->name, w->name_len, true, &r, &why) < 0) {
        return -1;
    }
    uint8_t *plain = w->data;
    size_t plain_len = w->len;
    if (r.compressor == PROTO_COMPRESSOR_ZSTD) {
        plain = malloc(r.size ? r.size : 1);
        size_t n = ZSTD_decompress(plain, r.size, w->data, w->len);
        if (ZSTD_isError(n) || n != r.size) {
            free(plain);
            return -1;
        }
        plain_len = n;
    }
    uint8_t h[32];
    sha256(plain, plain_len, h);
    bool ok = plain_len == r.size && memcmp(h, r.hash, 32) == 0;
    if (ok) fake_add_blob(f, plain, plain_len);
    if (plain != w->data) free(plain);
    return ok ? (r.compressor == PROTO_COMPRESSOR_ZSTD ? (int64_t)w->len : (int64_t)r.size) : -1;
}

static void handle_write(struct fake_server *f, struct fstream *st)
{
    struct write_state w = { .f = f };
    if (each_message(st, write_message, &w) < 0) w.bad = true;
    int64_t committed = write_commit(f, &w);
    free(w.data);
    if (committed < 0) {
        atomic_fetch_add(&f->stats.write_bad, 1);
        trailers_only(f, st, 3);
        return;
    }
    atomic_fetch_add(&f->stats.write_committed, 1);
    Google__Bytestream__WriteResponse resp;
    google__bytestream__write_response__init(&resp);
    resp.committed_size = committed;
    respond_message(f, st, &resp.base);
}

static void write_early(struct fake_server *f, struct fstream *st)
{
    Google__Bytestream__WriteResponse resp;
    google__bytestream__write_response__init(&resp);
    resp.committed_size = -1;
    respond_message(f, st, &resp.base);
}

struct read_state {
    struct proto_read_request r;
    char name[PROTO_RESOURCE_NAME_MAX];
    bool ok;
};

static void read_message(const uint8_t *m, size_t len, void *arg)
{
    struct read_state *rs = arg;
    rs->ok = proto_bytestream_read_request(m, len, &rs->r) == 0 &&
             rs->r.resource_name_len < sizeof(rs->name);
    if (rs->ok) memcpy(rs->name, rs->r.resource_name, rs->r.resource_name_len);
}

/* Frames <data>/<len> as ReadResponse messages of <chunk> bytes. */
static uint8_t *frame_reads(const uint8_t *data, size_t len, uint32_t chunk, size_t *out_len)
{
    size_t cap = len + (len / chunk + 1) * PROTO_READ_RESPONSE_HEADER_MAX;
    uint8_t *b = malloc(cap);
    size_t o = 0;
    for (size_t off = 0; off < len; off += chunk) {
        uint32_t n = (uint32_t)(len - off < chunk ? len - off : chunk);
        o += proto_bytestream_read_response_header(b + o, n);
        memcpy(b + o, data + off, n);
        o += n;
    }
    *out_len = o;
    return b;
}

static void handle_read(struct fake_server *f, struct fstream *st)
{
    struct read_state rs = { .ok = false };
    struct proto_resource r;
    const char *why;
    if (each_message(st, read_message, &rs) != 1 || !rs.ok ||
        proto_resource_parse(rs.name, rs.r.resource_name_len, false, &r, &why) < 0) {
        trailers_only(f, st, 3);
        return;
    }
    pthread_mutex_lock(&f->mu);
    struct fake_blob *b = find_blob(f, r.hash, r.size);
    size_t len = b ? b->size : 0;
    uint8_t *copy = malloc(len + 2);
    if (b) memcpy(copy, b->data, len);
    pthread_mutex_unlock(&f->mu);
    if (!b) {
        free(copy);
        trailers_only(f, st, 5);
        return;
    }
    if (f->cfg.read_mode == FAKE_READ_CORRUPT && len > 0) copy[len / 2] ^= 0x40;
    if (f->cfg.read_mode == FAKE_READ_SHORT && len > 0) len--;
    if (f->cfg.read_mode == FAKE_READ_LONG) copy[len++] = 'x';
    uint8_t *body = copy;
    if (r.compressor == PROTO_COMPRESSOR_ZSTD) {
        size_t bound = ZSTD_compressBound(len);
        body = malloc(bound);
        len = ZSTD_compress(body, bound, copy, len, 1);
        free(copy);
    }
    size_t framed_len;
    uint32_t chunk = f->cfg.read_chunk ? f->cfg.read_chunk : 64 * 1024;
    uint8_t *framed = frame_reads(body, len, chunk, &framed_len);
    free(body);
    if (f->cfg.read_mode == FAKE_READ_STALL) st->send_limit = f->cfg.stall_after;
    atomic_fetch_add(&f->stats.reads, 1);
    atomic_fetch_add(&f->stats.read_bytes, len);
    respond(f, st, framed, framed_len);
}

static void find_message(const uint8_t *m, size_t len, void *arg)
{
    *(Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest **)arg =
        build__bazel__remote__execution__v2__find_missing_blobs_request__unpack(NULL, len, m);
}

static void handle_find(struct fake_server *f, struct fstream *st)
{
    Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest *req = NULL;
    if (each_message(st, find_message, &req) != 1 || !req) {
        trailers_only(f, st, 3);
        return;
    }
    Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse resp;
    build__bazel__remote__execution__v2__find_missing_blobs_response__init(&resp);
    resp.missing_blob_digests = calloc(req->n_blob_digests + 1, sizeof(void *));
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < req->n_blob_digests; i++) {
        Build__Bazel__Remote__Execution__V2__Digest *d = req->blob_digests[i];
        uint8_t h[32];
        if (proto_hex_decode(d->hash, strlen(d->hash), h) < 0 || strlen(d->hash) != 64 ||
            !find_blob(f, h, (uint64_t)d->size_bytes)) {
            resp.missing_blob_digests[resp.n_missing_blob_digests++] = d;
        }
    }
    pthread_mutex_unlock(&f->mu);
    respond_message(f, st, &resp.base);
    free(resp.missing_blob_digests);
    build__bazel__remote__execution__v2__find_missing_blobs_request__free_unpacked(req, NULL);
}

static void batch_message(const uint8_t *m, size_t len, void *arg)
{
    *(Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest **)arg =
        build__bazel__remote__execution__v2__batch_update_blobs_request__unpack(NULL, len, m);
}

/* Stores one blob of a batch; returns its gRPC status. */
static int batch_one(struct fake_server *f,
                     const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *q)
{
    uint8_t h[32];
    const Build__Bazel__Remote__Execution__V2__Digest *d = q->digest;
    if (!d || strlen(d->hash) != 64 || proto_hex_decode(d->hash, 64, h) < 0) return 3;
    size_t size = (size_t)d->size_bytes;
    uint8_t *plain = malloc(size + 1);
    size_t n = q->data.len;
    if (q->compressor == BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD) {
        n = ZSTD_decompress(plain, size, q->data.data, q->data.len);
        if (ZSTD_isError(n)) n = size + 1;
    } else if (n <= size && n > 0) {
        memcpy(plain, q->data.data, n);
    }
    uint8_t got[32];
    sha256(plain, n <= size ? n : 0, got);
    int status = n == size && memcmp(got, h, 32) == 0 ? 0 : 3;
    if (status == 0) fake_add_blob(f, plain, n);
    free(plain);
    return status;
}

static void handle_batch(struct fake_server *f, struct fstream *st)
{
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest *req = NULL;
    if (f->cfg.no_batch || each_message(st, batch_message, &req) != 1 || !req) {
        trailers_only(f, st, f->cfg.no_batch ? 12 : 3);
        if (req)
            build__bazel__remote__execution__v2__batch_update_blobs_request__free_unpacked(req,
                                                                                           NULL);
        return;
    }
    size_t n = req->n_requests;
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse resp;
    build__bazel__remote__execution__v2__batch_update_blobs_response__init(&resp);
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response *rs =
        calloc(n + 1, sizeof(*rs));
    Google__Rpc__Status *ss = calloc(n + 1, sizeof(*ss));
    resp.responses = calloc(n + 1, sizeof(void *));
    for (size_t i = 0; i < n; i++) {
        build__bazel__remote__execution__v2__batch_update_blobs_response__response__init(&rs[i]);
        google__rpc__status__init(&ss[i]);
        ss[i].code = batch_one(f, req->requests[i]);
        if (ss[i].code)
            ss[i].message = "digest mismatch";
        else
            atomic_fetch_add(&f->stats.batch_blobs, 1);
        rs[i].digest = req->requests[i]->digest;
        rs[i].status = &ss[i];
        resp.responses[resp.n_responses++] = &rs[i];
    }
    atomic_fetch_add(&f->stats.batch_calls, 1);
    respond_message(f, st, &resp.base);
    free(resp.responses);
    free(ss);
    free(rs);
    build__bazel__remote__execution__v2__batch_update_blobs_request__free_unpacked(req, NULL);
}

static void handle_caps(struct fake_server *f, struct fstream *st)
{
    Build__Bazel__Remote__Execution__V2__DigestFunction__Value fns[] = {
        BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256
    };
    Build__Bazel__Remote__Execution__V2__CacheCapabilities cache;
    build__bazel__remote__execution__v2__cache_capabilities__init(&cache);
    cache.n_digest_functions = 1;
    cache.digest_functions = fns;
    cache.max_batch_total_size_bytes = 1234;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities caps;
    build__bazel__remote__execution__v2__server_capabilities__init(&caps);
    caps.cache_capabilities = &cache;
    respond_message(f, st, &caps.base);
}

static void handle(struct fake_server *f, struct fstream *st)
{
    if (f->cfg.no_answer) return;
    if (f->cfg.status > 0) {
        trailers_only(f, st, f->cfg.status);
    } else if (strcmp(st->path, "/google.bytestream.ByteStream/Write") == 0) {
        handle_write(f, st);
    } else if (strcmp(st->path, "/google.bytestream.ByteStream/Read") == 0) {
        handle_read(f, st);
    } else if (strstr(st->path, "BatchUpdateBlobs")) {
        handle_batch(f, st);
    } else if (strstr(st->path, "FindMissingBlobs")) {
        handle_find(f, st);
    } else if (strstr(st->path, "GetCapabilities")) {
        handle_caps(f, st);
    } else {
        trailers_only(f, st, 12);
    }
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct fake_server *f = ud;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    struct fstream *st = calloc(1, sizeof(*st));
    st->id = frame->hd.stream_id;
    st->next = f->streams;
    f->streams = st;
    atomic_fetch_add(&f->stats.streams, 1);
    nghttp2_session_set_stream_user_data(s, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    struct fake_server *f = ud;
    struct fstream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!st) return 0;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0 && valuelen < sizeof(st->path)) {
        memcpy(st->path, value, valuelen);
    }
    if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
        atomic_fetch_add(&f->stats.timeout_headers, 1);
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    struct fake_server *f = ud;
    struct fstream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    if (st->req_len + len > st->req_cap) {
        st->req_cap = (st->req_len + len) * 2;
        st->req = realloc(st->req, st->req_cap);
    }
    memcpy(st->req + st->req_len, data, len);
    st->req_len += len;
    if (f->cfg.write_early_ok && !st->responded && strstr(st->path, "Write")) write_early(f, st);
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct fake_server *f = ud;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) return 0;
    struct fstream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!st) return 0;
    st->req_done = true;
    if (!st->responded) handle(f, st);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct fake_server *f = ud;
    struct fstream *st = nghttp2_session_get_stream_user_data(s, id);
    if (code == NGHTTP2_CANCEL) atomic_fetch_add(&f->stats.rst_cancel, 1);
    if (!st) return 0;
    for (struct fstream **pp = &f->streams; *pp; pp = &(*pp)->next) {
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    }
    free(st->req);
    free(st->resp);
    free(st);
    return 0;
}

/* ---- the thread ---- */

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void serve_conn(struct fake_server *f, int fd)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_server_new(&f->s, cbs, f);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry set[] = { { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100 },
                                     { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 } };
    nghttp2_submit_settings(f->s, NGHTTP2_FLAG_NONE, set, 2);
    nghttp2_session_set_local_window_size(f->s, NGHTTP2_FLAG_NONE, 0, 8 << 20);
    static uint8_t buf[64 * 1024];
    while (!atomic_load(&f->stop)) {
        const uint8_t *p;
        ssize_t n;
        bool ok = true;
        while (ok && (n = nghttp2_session_mem_send(f->s, &p)) > 0)
            ok = write_all(fd, p, (size_t)n);
        if (!ok || (!nghttp2_session_want_read(f->s) && !nghttp2_session_want_write(f->s))) break;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 20) <= 0) continue;
        n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0 || nghttp2_session_mem_recv(f->s, buf, (size_t)n) < 0) break;
    }
    nghttp2_session_del(f->s);
    f->s = NULL;
    while (f->streams) {
        struct fstream *st = f->streams;
        f->streams = st->next;
        free(st->req);
        free(st->resp);
        free(st);
    }
}

static void *fake_main(void *arg)
{
    struct fake_server *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd pfd = { .fd = f->lfd, .events = POLLIN };
        if (poll(&pfd, 1, 20) <= 0) continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) continue;
        serve_conn(f, fd);
        close(fd);
    }
    return NULL;
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    cr_assert(listen(fd, 16) == 0);
    socklen_t alen = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    *port = ntohs(a.sin_port);
    return fd;
}

struct fake_server *fake_start(const struct fake_config *cfg)
{
    struct fake_server *f = calloc(1, sizeof(*f));
    if (cfg) f->cfg = *cfg;
    pthread_mutex_init(&f->mu, NULL);
    f->lfd = listen_any(&f->port);
    cr_assert(pthread_create(&f->th, NULL, fake_main, f) == 0);
    return f;
}

void fake_stop(struct fake_server *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    close(f->lfd);
    for (size_t i = 0; i < f->nblobs; i++)
        free(f->blobs[i].data);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

uint16_t fake_port(const struct fake_server *f)
{
    return f->port;
}

struct fake_stats *fake_stats(struct fake_server *f)
{
    return &f->stats;
}

bool fake_wait(_Atomic uint64_t *counter, uint64_t want, uint32_t ms)
{
    for (uint32_t i = 0; i < ms; i++) {
        if (atomic_load(counter) >= want) return true;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    return atomic_load(counter) >= want;
}

int fake_silent_listener(uint16_t *port)
{
    return listen_any(port);
}

void fake_addr(uint16_t port, struct client_addr *out)
{
    char hp[32];
    char why[128];
    snprintf(hp, sizeof(hp), "127.0.0.1:%u", port);
    cr_assert(client_addr_parse(hp, out, why, sizeof(why)) == 0, "%s", why);
}
