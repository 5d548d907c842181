/*
 * Threads, listeners and the shutdown protocol of the server.
 *
 * Start: the listening sockets are opened here (the first decides the port), then the core
 * threads start one after the other; each creates its ring in its own thread, runs
 * hooks.core_init, starts accepting and reports back. A core that fails makes the whole start
 * fail, and the cores already running are stopped.
 *
 * Stop, per core: shutdown message -> draining (listener stopping, connections asked to finish,
 * drain timer armed) -> no connection left and the listener closed -> quiesced (drain timer
 * stopped, hooks.core_quiesce) -> no op in flight and no connection on its way to the core ->
 * the loop ends.
 *
 * New connections go to the core with the fewest. SO_REUSEPORT spreads them by a hash of
 * their addresses, so a client with a few connections often has them all on one core (two
 * connections on 2 cores: one time in two) while the others idle. A core that accepts a
 * connection while another has fewer (counting those on their way to it) hands it over: a
 * MSG_RING carrying the fd, which the other adopts as if it had accepted it.
 */
#include "ring/server.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "ring/conn.h"
#include "ring/cpus.h"
#include "ring/internal.h"
#include "ring/timer.h"

#define PROBE_WAIT_MS 2000 /* how long a port in use is waited for */
#define PROBE_STEP_MS 50
#define STOP_POLL_MS  100 /* how often the stop looks for a second signal while cores drain */

struct server_core {
    struct ring_server *srv;       /* back pointer */
    uint32_t index;                /* core number */
    int cpu;                       /* pinned CPU, or -1 */
    int listen_fd;                 /* handed to the listener once the core runs */
    pthread_t thread;              /* the core's thread */
    bool thread_started;           /* <thread> must be joined */
    struct ring_core *core;        /* created by the thread */
    struct ring_listener listener; /* this core's listener */
    bool listener_stopped;         /* the listener's fd is closed */
    struct ring_owner owner;       /* the drain timer */
    struct ring_timer drain_timer; /* closes what is left after drain_timeout_ms */
    struct ring_msg shutdown_msg;  /* sent by the main thread */
    struct ring_msg force_msg;     /* sent by the main thread at a second stop signal */
    atomic_bool adopts;            /* takes connections handed over: started, not draining */
    atomic_uint incoming;          /* connections handed over to it and not yet adopted */
    bool draining;                 /* shutdown began */
    bool quiesced;                 /* connections are gone; waiting for the last op */
    atomic_int status;             /* start result (0 or -errno), then loop result; the main
                                    * thread reads it while the core's thread may be ending
                                    * (force_cores at a second stop signal) */
    bool ended;                    /* the thread is about to return: join it (srv->lock) */
    char why[256];                 /* start failure, one line */
};

struct ring_server {
    struct ring_server_options opts; /* copy of the caller's */
    uint16_t port;                   /* the bound port */
    uint32_t core_count;             /* entries in cores[] */
    struct server_core *cores;       /* one per core */
    struct io_uring msg_ring;        /* the main thread's ring, for MSG_RING */
    pthread_mutex_t lock;            /* guards <reported> and each core's <ended> */
    pthread_cond_t cond;             /* signalled when a core reports its start or ends;
                                      * CLOCK_MONOTONIC (join_core) */
    uint32_t reported;               /* cores that finished starting */
};

void ring_server_options_default(struct ring_server_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    ring_core_options_default(&opts->core);
    opts->cores = 0;
    opts->host = "127.0.0.1";
    opts->port = 8980;
    opts->backlog = 4096;
    opts->drain_timeout_ms = 30000;
    opts->pin = true;
}

/* Returns the <i>-th CPU of the affinity mask, wrapping around; -1 when unknown. */
static int nth_cpu(uint32_t i)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == -1) return -1;
    int n = CPU_COUNT(&set);
    if (n <= 0) return -1;
    uint32_t want = i % (uint32_t)n;
    uint32_t seen = 0;
    for (size_t cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        if (seen++ == want) return (int)cpu;
    }
    return -1;
}

/* ---- the drain, on the core's thread ---- */

static void core_check_done(struct server_core *sc)
{
    struct ring_core *core = sc->core;
    if (!sc->draining || sc->quiesced || !sc->listener_stopped) return;
    if (!base_list_is_empty(&core->conns)) return;
    sc->quiesced = true;
    ring_timer_stop(core, &sc->drain_timer);
    if (sc->srv->opts.hooks.core_quiesce) {
        sc->srv->opts.hooks.core_quiesce(core, sc->srv->opts.hooks.arg);
    }
}

static void core_conn_closed(struct ring_core *core)
{
    struct server_core *sc = core->server;
    if (sc->draining) core_check_done(sc);
}

static void listener_stopped(struct ring_core *core, void *ctx)
{
    (void)core;
    struct server_core *sc = ctx;
    sc->listener_stopped = true;
    core_check_done(sc);
}

/* Closes the connections a drain left; requests still under way end with them. */
static void close_left(struct server_core *sc)
{
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &sc->core->conns)
    {
        struct ring_conn *c = BASE_CONTAINER_OF(it, struct ring_conn, link);
        ring_conn_close(c, -ESHUTDOWN);
    }
}

static void drain_expired(struct ring_timer *timer)
{
    struct server_core *sc = timer->ctx;
    LOG_WARN("drain timeout: closing the connections left on core %u", sc->index);
    close_left(sc);
}

static void core_on_shutdown(struct ring_core *core, void *arg)
{
    struct server_core *sc = arg;
    if (sc->draining) return;
    sc->draining = true;
    atomic_store(&sc->adopts, false); /* see hand_over */
    ring_listener_stop(&sc->listener, listener_stopped, sc);
    const struct ring_server_hooks *hooks = &sc->srv->opts.hooks;
    if (hooks->core_drain) hooks->core_drain(core, hooks->arg);
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &core->conns)
    {
        struct ring_conn *c = BASE_CONTAINER_OF(it, struct ring_conn, link);
        ring_conn_drain(c);
    }
    if (ring_timer_start(core, &sc->drain_timer, &sc->owner, sc->srv->opts.drain_timeout_ms) < 0) {
        drain_expired(&sc->drain_timer);
    }
    core_check_done(sc);
}

/* A second stop signal: the drain ends now, as when --drain-timeout runs out. */
static void core_on_force(struct ring_core *core, void *arg)
{
    struct server_core *sc = arg;
    if (!sc->draining) core_on_shutdown(core, arg);
    if (sc->quiesced || base_list_is_empty(&core->conns)) return;
    LOG_WARN("second stop signal: closing the connections left on core %u", sc->index);
    close_left(sc);
}

/* ---- spreading connections ---- */

struct handover {
    struct ring_msg msg;    /* posted to <to>'s core */
    struct server_core *to; /* the core that adopts the connection */
    int fd;                 /* the accepted socket */
};

/* Connections open on <sc> and on their way to it. Any core's thread. */
static uint64_t core_load(struct server_core *sc)
{
    return base_counter_get(&sc->core->counters.conns) + atomic_load(&sc->incoming);
}

/*
 * A handed-over connection lands on <core> (<sc>): it becomes one of the core's own, or is
 * closed while the core drains; then it leaves <to>'s count of connections on their way. Last:
 * the connection is counted in the core's gauge before it leaves <incoming>.
 */
static void land(struct ring_core *core, struct server_core *sc, struct handover *h)
{
    struct server_core *to = h->to;
    int fd = h->fd;
    free(h);
    if (sc->draining) {
        (void)close(fd);
    } else {
        const struct ring_server_hooks *hooks = &sc->srv->opts.hooks;
        hooks->on_accept(core, fd, hooks->arg);
    }
    atomic_fetch_sub(&to->incoming, 1);
}

/* On the adopting core. */
static void adopt(struct ring_core *core, void *arg)
{
    struct handover *h = arg;
    land(core, h->to, h);
}

/*
 * On the handing core, when the kernel could not deliver the hand-over (the other core's ring
 * could not take the message): the connection stays here, and leaves the other's <incoming>,
 * or the other's drain would wait for it for good.
 */
static void handover_failed(struct ring_core *core, void *arg)
{
    land(core, core->server, arg);
}

/*
 * Posts <fd> to <to>. 0, or -errno with the fd still the caller's. Against <to>'s drain: the
 * drain stops adoption, then its loop ends only once <incoming> is zero. Both sides write
 * before they read (sequentially consistent), so either this side sees adoption stopped, or
 * the drain sees the connection on its way and waits for it.
 */
static int hand_over(struct server_core *from, struct server_core *to, int fd)
{
    struct handover *h = malloc(sizeof(*h));
    if (!h) return -ENOMEM;
    atomic_fetch_add(&to->incoming, 1);
    if (!atomic_load(&to->adopts)) {
        atomic_fetch_sub(&to->incoming, 1);
        free(h);
        return -ESHUTDOWN;
    }
    h->msg.fn = adopt;
    h->msg.failed = handover_failed;
    h->msg.arg = h;
    h->to = to;
    h->fd = fd;
    int rc = ring_core_post(from->core, to->core, &h->msg);
    if (rc < 0) {
        atomic_fetch_sub(&to->incoming, 1);
        free(h);
        return rc;
    }
    base_counter_inc(&from->core->counters.conns_handed_over);
    return 0;
}

/* The listener's callback: keeps the connection, or hands it to a core with fewer. */
static void server_accept(struct ring_core *core, int fd, void *ctx)
{
    struct server_core *sc = ctx;
    struct ring_server *srv = sc->srv;
    struct server_core *to = NULL;
    uint64_t best = core_load(sc);
    /* Bounded by the core count. */
    for (uint32_t i = 0; i < srv->core_count; i++) {
        struct server_core *o = &srv->cores[i];
        if (o == sc || !atomic_load(&o->adopts)) continue;
        uint64_t load = core_load(o);
        if (load < best) {
            best = load;
            to = o;
        }
    }
    if (to && hand_over(sc, to, fd) == 0) return;
    srv->opts.hooks.on_accept(core, fd, srv->opts.hooks.arg);
}

bool ring_server_core_is_draining(const struct ring_core *core)
{
    const struct server_core *sc = core->server;
    return sc && sc->draining;
}

/* ---- the core's thread ---- */

static void core_report(struct server_core *sc, int status)
{
    struct ring_server *srv = sc->srv;
    sc->status = status;
    pthread_mutex_lock(&srv->lock);
    srv->reported++;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

static int core_start(struct server_core *sc)
{
    struct ring_server *srv = sc->srv;
    const struct ring_server_hooks *hooks = &srv->opts.hooks;
    int rc = ring_core_create(&srv->opts.core, sc->index, &sc->core, sc->why, sizeof(sc->why));
    if (rc < 0) return rc;
    sc->core->server = sc;
    sc->core->on_conn_closed = core_conn_closed;
    ring_owner_init(&sc->owner);
    ring_timer_init(&sc->drain_timer, drain_expired, sc);
    sc->shutdown_msg.fn = core_on_shutdown;
    sc->shutdown_msg.arg = sc;
    sc->force_msg.fn = core_on_force;
    sc->force_msg.arg = sc;
    if (hooks->core_init) {
        rc = hooks->core_init(sc->core, hooks->arg);
        if (rc < 0) {
            if (sc->why[0] == '\0') {
                (void)snprintf(sc->why, sizeof(sc->why), "core %u failed to start: %s", sc->index,
                               base_err_str(rc));
            }
            goto err_destroy;
        }
    }
    rc = ring_listener_start(&sc->listener, sc->core, sc->listen_fd, server_accept, sc);
    if (rc < 0) {
        (void)snprintf(sc->why, sizeof(sc->why), "core %u cannot accept: %s", sc->index,
                       base_err_str(rc));
        goto err_deinit;
    }
    sc->listen_fd = -1; /* the listener owns it now */
    /* After sc->core is set: a core that sees <adopts> reads it. */
    atomic_store(&sc->adopts, true);
    return 0;

err_deinit:
    if (hooks->core_deinit) hooks->core_deinit(sc->core, hooks->arg);
err_destroy:
    ring_core_destroy(sc->core);
    sc->core = NULL;
    return rc;
}

static void core_run(struct server_core *sc)
{
    char name[16];
    (void)snprintf(name, sizeof(name), "core%u", sc->index);
    base_log_set_thread_name(name);
    (void)snprintf(name, sizeof(name), "ringcas-c%u", sc->index);
    (void)pthread_setname_np(pthread_self(), name);
    int rc = core_start(sc);
    core_report(sc, rc);
    if (rc < 0) return;
    struct ring_core *core = sc->core;
    /* The event loop: runs until the drain completed and the last op came back. */
    while (!(sc->quiesced && base_counter_get(&core->counters.ops_in_flight) == 0 &&
             base_list_is_empty(&core->deferred) && atomic_load(&sc->incoming) == 0)) {
        rc = ring_core_tick(core, RING_WAIT_FOREVER);
        if (rc < 0) {
            LOG_ERROR("core %u: io_uring_enter failed: %s", sc->index, base_err_str(rc));
            atomic_store(&sc->adopts, false);
            /* Nobody accepts on its listener any more: out of the SO_REUSEPORT group, so
             * that new connections go to the cores still serving instead of waiting here. */
            ring_listener_abort(&sc->listener);
            sc->status = -EIO;
            return;
        }
    }
    const struct ring_server_hooks *hooks = &sc->srv->opts.hooks;
    if (hooks->core_deinit) hooks->core_deinit(core, hooks->arg);
    ring_owner_deinit(&sc->owner);
    /* The core itself is destroyed by ring_server_stop after the join, so that other threads
     * may read its counters until then. */
    sc->status = 0;
}

static void *core_main(void *arg)
{
    struct server_core *sc = arg;
    core_run(sc);
    struct ring_server *srv = sc->srv;
    pthread_mutex_lock(&srv->lock);
    sc->ended = true;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

/* ---- the main thread ---- */

/*
 * Probes <port> until it is free, for up to PROBE_WAIT_MS: after a crash the kernel closes
 * the dead process's listeners only when it has torn its rings down, a few milliseconds
 * later, and a supervisor may restart the server on the same port at once.
 */
static int probe_port(const char *host, uint16_t port)
{
    int rc = ring_listen_probe(host, port);
    for (int waited = 0; rc == -EADDRINUSE && waited < PROBE_WAIT_MS; waited += PROBE_STEP_MS) {
        if (waited == 0) LOG_WARN("%s:%u is in use; waiting for it to be freed", host, port);
        const struct timespec step = { 0, PROBE_STEP_MS * 1000000L };
        (void)nanosleep(&step, NULL);
        rc = ring_listen_probe(host, port);
    }
    return rc;
}

/*
 * What to do about a bind that failed with <rc>, for the errors a user's --listen can cause:
 * "permission denied" alone did not say that the port number was the fault, nor "address not
 * available" that the address is not one of this machine's.
 */
static const char *listen_fix(int rc)
{
    switch (rc) {
    case -EADDRINUSE:
        return " (another server uses the port; pick --listen)";
    case -EACCES:
        return " (a port below 1024 needs root or CAP_NET_BIND_SERVICE; pick --listen with a "
               "port of 1024 or more)";
    case -EADDRNOTAVAIL:
        return " (no network interface of this machine has that address; --listen "
               "0.0.0.0:PORT listens on all of them, 127.0.0.1:PORT on this machine only)";
    default:
        return "";
    }
}

/* The start-up line for a port that cannot be listened on. */
static void listen_failed(const char *host, uint16_t port, int rc, char *why, size_t why_size)
{
    (void)snprintf(why, why_size, "cannot listen on %s:%u: %s%s", host, (unsigned)port,
                   base_err_str(rc), listen_fix(rc));
}

int ring_server_probe(const char *host, uint16_t port, char *why, size_t why_size)
{
    /* Port 0 is safe without a probe: the kernel never picks a port that has listeners. */
    int rc = port ? probe_port(host, port) : 0;
    if (rc < 0) listen_failed(host, port, rc, why, why_size);
    return rc;
}

static int open_listeners(struct ring_server *srv, char *why, size_t why_size)
{
    uint16_t port = srv->opts.port;
    int rc = ring_server_probe(srv->opts.host, port, why, why_size);
    if (rc < 0) return rc;
    for (uint32_t i = 0; rc == 0 && i < srv->core_count; i++) {
        int fd = ring_listen_open(srv->opts.host, port, srv->opts.backlog, &port);
        if (fd >= 0) {
            srv->cores[i].listen_fd = fd;
        } else {
            rc = fd;
        }
    }
    if (rc < 0) {
        listen_failed(srv->opts.host, srv->opts.port, rc, why, why_size);
        return rc; /* the caller closes the sockets opened so far */
    }
    srv->port = port;
    return 0;
}

/* The signals that stop the server: SIGTERM, SIGINT, and SIGHUP (the terminal closing, or a
 * supervisor's hang-up), whose default action would kill the process at once, with no drain
 * and no log line. */
static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

/* What ring_server_wait_signals returns: the stop signals, and SIGUSR1, whose default action
 * would end the process too (an operator's `kill -USR1` to reopen logs, as for nginx). */
static void wait_set(sigset_t *set)
{
    stop_signals(set);
    sigaddset(set, SIGUSR1);
}

void ring_server_block_signals(void)
{
    sigset_t set;
    wait_set(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void server_free(struct ring_server *srv)
{
    for (uint32_t i = 0; i < srv->core_count; i++) {
        if (srv->cores[i].listen_fd >= 0) (void)close(srv->cores[i].listen_fd);
    }
    io_uring_queue_exit(&srv->msg_ring);
    pthread_cond_destroy(&srv->cond);
    pthread_mutex_destroy(&srv->lock);
    free(srv->cores);
    free(srv);
}

static int start_core(struct ring_server *srv, uint32_t i)
{
    struct server_core *sc = &srv->cores[i];
    int rc = pthread_create(&sc->thread, NULL, core_main, sc);
    if (rc != 0) {
        (void)snprintf(sc->why, sizeof(sc->why), "cannot start core thread %u: %s", i,
                       base_err_str(rc));
        return -rc;
    }
    sc->thread_started = true;
    pthread_mutex_lock(&srv->lock);
    while (srv->reported <= i) {
        pthread_cond_wait(&srv->cond, &srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    if (sc->status < 0) return sc->status;
    if (sc->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((size_t)sc->cpu, &set);
        if (pthread_setaffinity_np(sc->thread, sizeof(set), &set) != 0) {
            LOG_WARN("cannot pin core %u to CPU %d", i, sc->cpu);
        }
    }
    return 0;
}

int ring_server_start(const struct ring_server_options *opts, struct ring_server **out, char *why,
                      size_t why_size)
{
    ASSERT(opts->hooks.on_accept);
    struct ring_server *srv = calloc(1, sizeof(*srv));
    if (!srv) return -ENOMEM;
    srv->opts = *opts;
    uint32_t allowed = ring_cpus_allowed();
    srv->core_count = opts->cores ? opts->cores : ring_cpus_cores();
    /* Pinned when every allowed CPU gets a thread of its own: then pinning only keeps each
     * core's ring and caches on one CPU. With fewer threads than CPUs (a CPU limit below the
     * cpuset, --cores below the machine) pinning would stack them on the first CPUs of a
     * shared machine, where the scheduler would have moved them to idle ones. */
    bool pin = opts->pin && srv->core_count >= allowed;
    srv->cores = calloc(srv->core_count, sizeof(*srv->cores));
    pthread_mutex_init(&srv->lock, NULL);
    int rc = base_clock_cond_init(&srv->cond);
    ASSERT(rc == 0);
    rc = srv->cores ? io_uring_queue_init(8, &srv->msg_ring, 0) : -ENOMEM;
    if (rc < 0) {
        if (srv->cores) ring_setup_explain(rc, "io_uring_setup", why, why_size);
        free(srv->cores);
        free(srv);
        return rc;
    }
    for (uint32_t i = 0; i < srv->core_count; i++) {
        srv->cores[i].srv = srv;
        srv->cores[i].index = i;
        srv->cores[i].listen_fd = -1;
        srv->cores[i].cpu = pin ? nth_cpu(i) : -1;
    }
    ring_server_block_signals();
    rc = open_listeners(srv, why, why_size);
    if (rc < 0) {
        server_free(srv);
        return rc;
    }
    for (uint32_t i = 0; i < srv->core_count; i++) {
        rc = start_core(srv, i);
        if (rc < 0) {
            (void)snprintf(why, why_size, "%s", srv->cores[i].why);
            srv->core_count = i + 1; /* stop only what was started */
            int stop_rc = ring_server_stop(srv);
            if (stop_rc < 0) {
                LOG_WARN("stopping the cores that had started: %s", base_err_str(stop_rc));
            }
            return rc;
        }
    }
    if (pin && srv->core_count > allowed) {
        /* --cores past the CPUs: nth_cpu deals them out in turn. */
        LOG_INFO("%u cores, pinned to %u CPUs, up to %u on each", srv->core_count, allowed,
                 (srv->core_count + allowed - 1) / allowed);
    } else if (pin) {
        LOG_INFO("%u cores, each pinned to a CPU of its own", srv->core_count);
    } else {
        LOG_INFO("%u cores, not pinned (%u CPUs allowed)", srv->core_count, allowed);
    }
    *out = srv;
    return 0;
}

uint16_t ring_server_port(const struct ring_server *srv)
{
    return srv->port;
}

uint32_t ring_server_core_count(const struct ring_server *srv)
{
    return srv->core_count;
}

struct ring_core *ring_server_core(const struct ring_server *srv, uint32_t i)
{
    ASSERT(i < srv->core_count);
    return srv->cores[i].core;
}

void ring_server_counters(const struct ring_server *srv, struct ring_counters_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < srv->core_count; i++) {
        struct ring_core *core = srv->cores[i].core;
        if (core) ring_counters_add_to(ring_core_counters(core), out);
    }
}

int ring_server_take_signal(void)
{
    sigset_t set;
    stop_signals(&set);
    const struct timespec now = { 0 };
    int sig = sigtimedwait(&set, NULL, &now);
    return sig > 0 ? sig : 0;
}

int ring_server_wait_signals(struct ring_server *srv, uint32_t timeout_ms)
{
    (void)srv;
    sigset_t set;
    wait_set(&set);
    if (timeout_ms == RING_WAIT_FOREVER) {
        int sig = 0;
        while (sigwait(&set, &sig) != 0) {
            ;
        }
        return sig;
    }
    uint64_t end = base_clock_now_ns() + (uint64_t)timeout_ms * BASE_NS_PER_MS;
    for (;;) {
        uint64_t now = base_clock_now_ns();
        if (now >= end) return 0;
        const struct timespec ts = base_clock_timespec(end - now);
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig > 0) return sig;
        if (errno == EAGAIN) return 0; /* else EINTR: another signal's handler ran */
    }
}

/* Sends every core still running the second signal's message (core_on_force). */
static void force_cores(struct ring_server *srv)
{
    for (uint32_t i = 0; i < srv->core_count; i++) {
        struct server_core *sc = &srv->cores[i];
        if (!sc->thread_started || !sc->core || sc->status != 0) continue;
        int rc = ring_msg_send_from(&srv->msg_ring, sc->core, &sc->force_msg);
        if (rc < 0) LOG_ERROR("cannot tell core %u to stop now: %s", i, base_err_str(rc));
    }
}

/*
 * Waits up to STOP_POLL_MS for <sc>'s thread to end; true when it has. By the monotonic
 * clock: pthread_timedjoin_np waits until a wall-clock time, which lasted as much longer as
 * the clock stepped back meanwhile (an hour's step, an hour with a second signal unseen), and
 * ThreadSanitizer's runtime does not know pthread_clockjoin_np's join.
 */
static bool core_ended(struct ring_server *srv, struct server_core *sc)
{
    const struct timespec until =
        base_clock_timespec(base_clock_now_ns() + STOP_POLL_MS * BASE_NS_PER_MS);
    pthread_mutex_lock(&srv->lock);
    int rc = 0;
    while (!sc->ended && rc == 0) {
        rc = pthread_cond_timedwait(&srv->cond, &srv->lock, &until);
    }
    bool ended = sc->ended;
    pthread_mutex_unlock(&srv->lock);
    return ended;
}

/*
 * Joins <sc>'s thread. Bounded by the drain timeout (each core closes what is left when it
 * runs out). A second stop signal meanwhile (Ctrl-C pressed again, a supervisor that will not
 * wait) ends every core's drain at once, as the timeout would; <forced> says it came.
 */
static void join_core(struct ring_server *srv, struct server_core *sc, bool *forced)
{
    for (;;) {
        if (core_ended(srv, sc)) {
            (void)pthread_join(sc->thread, NULL); /* returning already */
            return;
        }
        int sig = *forced ? 0 : ring_server_take_signal();
        if (sig > 0) {
            *forced = true;
            LOG_WARN("signal %d during the drain: closing the connections left now", sig);
            force_cores(srv);
        }
    }
}

int ring_server_stop(struct ring_server *srv)
{
    int result = 0;
    for (uint32_t i = 0; i < srv->core_count; i++) {
        struct server_core *sc = &srv->cores[i];
        if (!sc->thread_started) continue;
        if (sc->core && sc->status == 0) {
            int rc = ring_msg_send_from(&srv->msg_ring, sc->core, &sc->shutdown_msg);
            if (rc < 0) LOG_ERROR("cannot signal core %u to stop: %s", i, base_err_str(rc));
        }
    }
    bool forced = false;
    for (uint32_t i = 0; i < srv->core_count; i++) {
        if (srv->cores[i].thread_started) join_core(srv, &srv->cores[i], &forced);
    }
    /* Only now that every loop has ended: until then another core may be reading this one's
     * counters (GET /metrics renders every core). */
    for (uint32_t i = 0; i < srv->core_count; i++) {
        struct server_core *sc = &srv->cores[i];
        if (!sc->thread_started || !sc->core) continue; /* a failed start cleaned up itself */
        if (sc->status < 0) {
            /* Its loop failed with ops in flight: their memory cannot be reclaimed safely. */
            result = -EIO;
            continue;
        }
        ring_core_destroy(sc->core);
        sc->core = NULL;
    }
    server_free(srv);
    return result;
}
