/* C helpers of the cgo layer: calls through C function pointers, which Go
 * cannot make itself. Not part of the installed API. */
#ifndef VDISK_VIXDISKLIB_SHIM_H
#define VDISK_VIXDISKLIB_SHIM_H

#define VIXDISKLIB_NO_PROTOTYPES 1
#include "vixDiskLib.h"
#include <stdlib.h>

/* Levels of vixlib_log. */
enum { VIXLIB_LOG = 0, VIXLIB_WARN = 1, VIXLIB_PANIC = 2 };

void vixlib_set_loggers(VixDiskLibGenericLogFunc *log, VixDiskLibGenericLogFunc *warn,
                        VixDiskLibGenericLogFunc *panicFunc);
/* vixlib_log hands msg to the callback of the level, with the format "%s".
 * It returns 0 when no callback is set. */
int vixlib_log(int level, const char *msg);
void vixlib_complete(VixDiskLibCompletionCB cb, void *data, VixError result);
void vixlib_progress(VixDiskLibProgressFunc fn, void *data, int percent);
uint64_t vixlib_thread_id(void);
uintptr_t vixlib_p2u(const void *p);
void *vixlib_u2p(uintptr_t u);

/* vixlib_count_done is a completion callback counting into a
 * vixlib_counter: the package's benchmarks use it as a C program's
 * callback. */
typedef struct {
  int64_t done, failed;
} vixlib_counter;
void vixlib_count_done(void *data, VixError result);

/* vixlib_thread_reads reads from a C thread as nbdkit's VDDK plugin does
 * (cthread.c), for the benchmarks: requests ReadAsync calls of sectors
 * each over slots positions, depth in flight, then Wait. */
int vixlib_thread_reads(VixDiskLibHandle h, uint64_t requests, uint64_t sectors, uint64_t slots, int depth,
                        uint8_t *bufs, uint64_t *failed, VixError *err);

/* A slow log callback for the test that Exit waits for running
 * callbacks (cthread.c). */
void vixlib_test_install_slow_logger(void);
void vixlib_test_mark_exit_returned(void);
long vixlib_test_late_calls(void);
long vixlib_test_calls(void);

/* Accessors of the credentials union. */
const char *vixlib_cred(const VixDiskLibConnectParams *p, int which);
void vixlib_set_cred(VixDiskLibConnectParams *p, int which, char *v);
enum { VIXLIB_UID_USER, VIXLIB_UID_PASSWORD, VIXLIB_SID_COOKIE, VIXLIB_SID_USER, VIXLIB_SID_KEY };

/* Accessors of the first-class-disk spec (spec.vStorageObjSpec). */
const char *vixlib_fcd(const VixDiskLibConnectParams *p, int which);
void vixlib_set_fcd(VixDiskLibConnectParams *p, int which, char *v);
enum { VIXLIB_FCD_ID, VIXLIB_FCD_DATASTORE, VIXLIB_FCD_SNAPSHOT };

#endif
