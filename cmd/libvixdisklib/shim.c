#include <pthread.h>
#include <stdarg.h>
#include "shim.h"

/* The InitEx callbacks. vixlib_set_loggers (InitEx, Exit) returns only
 * when no callback it replaced is still running on a library thread: once
 * Exit has returned none runs or starts, and the program may unload or
 * free what its callbacks use (VDDK's threads logged after Exit). Calls
 * that start after the swap see the new callbacks, so a stream of log
 * records cannot hold Exit off. A callback running on the calling thread
 * itself (one that calls InitEx or Exit) is not waited for. */
static VixDiskLibGenericLogFunc *loggers[3];
static pthread_mutex_t loggers_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t loggers_idle = PTHREAD_COND_INITIALIZER;
static unsigned long loggers_gen;        /* bumped by every swap */
static long loggers_running[2];          /* running callbacks, by gen parity */
static __thread long loggers_mine[2];    /* of those, on this thread */

void vixlib_set_loggers(VixDiskLibGenericLogFunc *log, VixDiskLibGenericLogFunc *warn,
                        VixDiskLibGenericLogFunc *panicFunc) {
  int old;
  pthread_mutex_lock(&loggers_lock);
  /* Callbacks of two swaps ago have ended: every swap waits for its own. */
  old = loggers_gen & 1;
  loggers[VIXLIB_LOG] = log;
  loggers[VIXLIB_WARN] = warn;
  loggers[VIXLIB_PANIC] = panicFunc;
  loggers_gen++;
  while (loggers_running[old] > loggers_mine[old])
    pthread_cond_wait(&loggers_idle, &loggers_lock);
  pthread_mutex_unlock(&loggers_lock);
}

/* call_with_va builds the va_list the VDDK callback type wants. */
static void call_with_va(VixDiskLibGenericLogFunc *fn, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fn(fmt, ap);
  va_end(ap);
}

int vixlib_log(int level, const char *msg) {
  VixDiskLibGenericLogFunc *fn;
  int gen;
  if (level < 0 || level > 2)
    return 0;
  pthread_mutex_lock(&loggers_lock);
  fn = loggers[level];
  gen = loggers_gen & 1;
  if (fn != NULL) {
    loggers_running[gen]++;
    loggers_mine[gen]++;
  }
  pthread_mutex_unlock(&loggers_lock);
  if (fn == NULL)
    return 0;
  call_with_va(fn, "%s", msg);
  pthread_mutex_lock(&loggers_lock);
  loggers_running[gen]--;
  loggers_mine[gen]--;
  pthread_cond_broadcast(&loggers_idle);
  pthread_mutex_unlock(&loggers_lock);
  return 1;
}

void vixlib_complete(VixDiskLibCompletionCB cb, void *data, VixError result) {
  if (cb != NULL)
    cb(data, result);
}

void vixlib_progress(VixDiskLibProgressFunc fn, void *data, int percent) {
  if (fn != NULL)
    (void)fn(data, percent);
}

uint64_t vixlib_thread_id(void) { return (uint64_t)pthread_self(); }
uintptr_t vixlib_p2u(const void *p) { return (uintptr_t)p; }
void *vixlib_u2p(uintptr_t u) { return (void *)u; }

const char *vixlib_cred(const VixDiskLibConnectParams *p, int which) {
  switch (which) {
  case VIXLIB_UID_USER: return p->creds.uid.userName;
  case VIXLIB_UID_PASSWORD: return p->creds.uid.password;
  case VIXLIB_SID_COOKIE: return p->creds.sessionId.cookie;
  case VIXLIB_SID_USER: return p->creds.sessionId.userName;
  case VIXLIB_SID_KEY: return p->creds.sessionId.key;
  }
  return NULL;
}

void vixlib_set_cred(VixDiskLibConnectParams *p, int which, char *v) {
  switch (which) {
  case VIXLIB_UID_USER: p->creds.uid.userName = v; break;
  case VIXLIB_UID_PASSWORD: p->creds.uid.password = v; break;
  case VIXLIB_SID_COOKIE: p->creds.sessionId.cookie = v; break;
  case VIXLIB_SID_USER: p->creds.sessionId.userName = v; break;
  case VIXLIB_SID_KEY: p->creds.sessionId.key = v; break;
  }
}

void vixlib_count_done(void *data, VixError result) {
  vixlib_counter *c = data;
  if (result != VIX_OK)
    __atomic_add_fetch(&c->failed, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&c->done, 1, __ATOMIC_RELEASE);
}

const char *vixlib_fcd(const VixDiskLibConnectParams *p, int which) {
  switch (which) {
  case VIXLIB_FCD_ID: return p->spec.vStorageObjSpec.id;
  case VIXLIB_FCD_DATASTORE: return p->spec.vStorageObjSpec.datastoreMoRef;
  case VIXLIB_FCD_SNAPSHOT: return p->spec.vStorageObjSpec.ssId;
  }
  return NULL;
}

void vixlib_set_fcd(VixDiskLibConnectParams *p, int which, char *v) {
  switch (which) {
  case VIXLIB_FCD_ID: p->spec.vStorageObjSpec.id = v; break;
  case VIXLIB_FCD_DATASTORE: p->spec.vStorageObjSpec.datastoreMoRef = v; break;
  case VIXLIB_FCD_SNAPSHOT: p->spec.vStorageObjSpec.ssId = v; break;
  }
}
