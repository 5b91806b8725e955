/* cthread.c: a C thread reading a disk as nbdkit's VDDK plugin does, for
 * the package's benchmarks: one thread issues ReadAsync calls, keeping
 * `depth` requests in flight, and the completion callbacks wake it through
 * a condition variable. Not part of the installed API. */
#include <pthread.h>
#include <time.h>

#include "vixDiskLib.h"
#include "shim.h"

typedef struct {
  VixDiskLibHandle h;
  uint64_t requests, sectors, slots;
  int depth;
  uint8 *bufs;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  uint64_t done, failed;
  VixError err;
} reader;

static void reader_done(void *data, VixError result) {
  reader *r = data;
  pthread_mutex_lock(&r->mu);
  r->done++;
  if (result != VIX_OK)
    r->failed++;
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->mu);
}

static void *reader_run(void *arg) {
  reader *r = arg;
  uint64_t i;
  /* Requests may complete out of order, so a buffer can be reused while
   * an earlier read into it is in flight: the bytes are not checked. */
  for (i = 0; i < r->requests; i++) {
    VixError e;
    pthread_mutex_lock(&r->mu);
    while (i - r->done >= (uint64_t)r->depth)
      pthread_cond_wait(&r->cond, &r->mu);
    pthread_mutex_unlock(&r->mu);
    e = VixDiskLib_ReadAsync(r->h, (i % r->slots) * r->sectors, r->sectors,
                             r->bufs + (i % r->depth) * r->sectors * VIXDISKLIB_SECTOR_SIZE, reader_done, r);
    if (e != VIX_ASYNC) {
      r->err = e;
      break;
    }
  }
  if (VixDiskLib_Wait(r->h) != VIX_OK && r->err == VIX_OK)
    r->err = VIX_E_FAIL;
  return NULL;
}

int vixlib_thread_reads(VixDiskLibHandle h, uint64_t requests, uint64_t sectors, uint64_t slots, int depth,
                        uint8_t *bufs, uint64_t *failed, VixError *err) {
  reader r = {h, requests, sectors, slots, depth, bufs};
  pthread_t t;
  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cond, NULL);
  if (pthread_create(&t, NULL, reader_run, &r) != 0)
    return -1;
  pthread_join(t, NULL);
  pthread_mutex_destroy(&r.mu);
  pthread_cond_destroy(&r.cond);
  *failed = r.failed;
  *err = r.err;
  return (int)(r.done == requests || r.err != VIX_OK ? 0 : -1);
}

/* A log callback for TestExitWaitsForCallbacks: it stays a while in each
 * call, and counts the calls that are still running, or that start, once
 * the test has marked Exit returned. */
static int exit_returned;
static long late_calls, calls;

static void slow_logger(const char *fmt, va_list ap) {
  struct timespec ts = {0, 200000}; /* 0.2 ms */
  (void)fmt;
  (void)ap;
  __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
  nanosleep(&ts, NULL);
  if (__atomic_load_n(&exit_returned, __ATOMIC_SEQ_CST))
    __atomic_add_fetch(&late_calls, 1, __ATOMIC_SEQ_CST);
}

void vixlib_test_install_slow_logger(void) {
  __atomic_store_n(&exit_returned, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&late_calls, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&calls, 0, __ATOMIC_SEQ_CST);
  vixlib_set_loggers(slow_logger, slow_logger, slow_logger);
}

void vixlib_test_mark_exit_returned(void) { __atomic_store_n(&exit_returned, 1, __ATOMIC_SEQ_CST); }
long vixlib_test_late_calls(void) { return __atomic_load_n(&late_calls, __ATOMIC_SEQ_CST); }
long vixlib_test_calls(void) { return __atomic_load_n(&calls, __ATOMIC_SEQ_CST); }
