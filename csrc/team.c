// A call's own threads. masklrp's OpenBLAS always runs single-threaded
// (linalg.c): its one thread count is process-wide, so a call that changed it
// would change the bits of every other call running beside it. All parallel
// work is ours instead: the engine's workers take chunks of the batch, and a
// worker that has more threads than chunks to share leads a team that splits
// its GEMMs (linalg.c) and its attention heads (engine.c). Teams belong to one
// call; nothing here is shared between calls, so calls from several Python
// threads run side by side.
#define _POSIX_C_SOURCE 200112L // clock_gettime under -std=c11
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "masklrp.h"

struct Team {
    int members;             // threads, the leader included
    pthread_t *helpers;      // members - 1
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    atomic_ulong generation; // bumped for each job; helpers wait for a new one
    atomic_int busy;         // helpers still working on the current job
    bool quit;
    TeamTask task;
    void *ctx;
    ptrdiff_t count;
    atomic_ptrdiff_t next;   // the next task index to take
};

static void take_tasks(Team *t) {
    for (ptrdiff_t i; (i = atomic_fetch_add(&t->next, 1)) < t->count;) t->task(t->ctx, i);
}

// A call's GEMMs come microseconds apart, and waking a sleeping thread takes longer than
// that: a thread waiting for the team spins this long before it sleeps.
#define SPIN_NS 100000

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// Spins until *value != unwanted (returns true) or SPIN_NS pass (false).
static bool spin_while_ulong(atomic_ulong *value, unsigned long unwanted) {
    const long long end = now_ns() + SPIN_NS;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(value, memory_order_acquire) != unwanted) return true;
        if (i % 64 == 0 && now_ns() > end) return false;
    }
}

static bool spin_while_busy(atomic_int *busy) {
    const long long end = now_ns() + SPIN_NS;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(busy, memory_order_acquire) == 0) return true;
        if (i % 64 == 0 && now_ns() > end) return false;
    }
}

static void *helper_main(void *arg) {
    Team *t = arg;
    unsigned long seen = 0;
    for (;;) {
        if (!spin_while_ulong(&t->generation, seen)) {
            pthread_mutex_lock(&t->lock);
            while (atomic_load(&t->generation) == seen && !t->quit) pthread_cond_wait(&t->wake, &t->lock);
            pthread_mutex_unlock(&t->lock);
        }
        if (atomic_load(&t->generation) == seen) break; // woken to quit
        seen = atomic_load(&t->generation);
        take_tasks(t);
        if (atomic_fetch_sub(&t->busy, 1) == 1) { // the last helper out tells the leader
            pthread_mutex_lock(&t->lock);
            pthread_cond_signal(&t->done);
            pthread_mutex_unlock(&t->lock);
        }
    }
    return NULL;
}

Team *team_new(int members) {
    Team *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->members = 1;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    pthread_cond_init(&t->done, NULL);
    atomic_init(&t->next, 0);
    atomic_init(&t->generation, 0);
    atomic_init(&t->busy, 0);
    if (members > 1 && (t->helpers = calloc((size_t)members - 1, sizeof *t->helpers)) != NULL) {
        // A helper that cannot start only makes the team smaller.
        while (t->members < members && pthread_create(&t->helpers[t->members - 1], NULL, helper_main, t) == 0)
            t->members++;
    }
    return t;
}

void team_free(Team *t) {
    if (t == NULL) return;
    pthread_mutex_lock(&t->lock);
    t->quit = true;
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
    for (int i = 0; i < t->members - 1; i++) pthread_join(t->helpers[i], NULL);
    pthread_cond_destroy(&t->done);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    free(t->helpers);
    free(t);
}

// The team of the calling thread: the kernels it calls split their GEMMs over it.
// Thread-local, so the rule kernels keep their plain signatures and a thread
// with no team (a Python caller of masklrp.kernels) runs them serially.
static _Thread_local Team *current;

int team_members(const Team *t) { return t == NULL ? 1 : t->members; }

void team_for(Team *t, ptrdiff_t count, TeamTask task, void *ctx) {
    if (t == NULL || t->members == 1 || count < 2) {
        for (ptrdiff_t i = 0; i < count; i++) task(ctx, i);
        return;
    }
    t->task = task;
    t->ctx = ctx;
    t->count = count;
    atomic_store(&t->next, 0);
    atomic_store(&t->busy, t->members - 1);
    pthread_mutex_lock(&t->lock); // a helper that found no new job under the lock is asleep
    atomic_fetch_add(&t->generation, 1);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
    current = NULL; // a task's own GEMMs run on the thread that took it
    take_tasks(t);  // the leader works too
    current = t;
    if (!spin_while_busy(&t->busy)) {
        pthread_mutex_lock(&t->lock);
        while (atomic_load(&t->busy) > 0) pthread_cond_wait(&t->done, &t->lock);
        pthread_mutex_unlock(&t->lock);
    }
}

Team *team_current(void) { return current; }

void team_set_current(Team *t) { current = t; }
