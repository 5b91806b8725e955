/*
 * front.c: libvixDiskLib.so.8, the front of vdisk's VixDiskLib.
 *
 * The library proper is Go (libvixDiskLib-core.so, built with
 * go build -buildmode=c-shared). A Go runtime starts its threads when its
 * library is loaded and cannot survive fork(), and VDDK programs load the
 * library and then fork: nbdkit dlopens it, forks into the background and
 * only then calls VixDiskLib_InitEx. This front is plain C. It exports
 * every VixDiskLib function and loads the Go core, from the directory the
 * front was loaded from, at the first call, so that the Go runtime starts
 * in the process that uses it. Each call is then forwarded unchanged.
 *
 * Part of vdisk (https://github.com/vdisk-project/vdisk), written for vdisk.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixDiskLib.h"

#define CORE_NAME "libvixDiskLib-core.so"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void *core;

static void load_core(void) {
  Dl_info info;
  char path[PATH_MAX];
  const char *env = getenv("VDISK_VIXDISKLIB_CORE");

  if (env != NULL && env[0] != '\0') {
    snprintf(path, sizeof path, "%s", env);
  } else if (dladdr((void *)&load_core, &info) != 0 && info.dli_fname != NULL &&
             strchr(info.dli_fname, '/') != NULL) {
    const char *slash = strrchr(info.dli_fname, '/');
    snprintf(path, sizeof path, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, CORE_NAME);
  } else {
    snprintf(path, sizeof path, "%s", CORE_NAME);
  }
  core = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (core == NULL)
    fprintf(stderr, "VixDiskLib: cannot load %s: %s\n", path, dlerror());
}

static void *sym(const char *name) {
  void *p;
  pthread_once(&once, load_core);
  if (core == NULL)
    return NULL;
  p = dlsym(core, name);
  if (p == NULL)
    fprintf(stderr, "VixDiskLib: %s missing from the core library\n", name);
  return p;
}

/* FWD defines a function forwarding to the core's; FAIL is returned when
 * the core cannot be loaded. */
#define FWD(ret, name, params, args, FAIL)           \
  ret name params {                                  \
    static ret (*slot) params;                       \
    ret (*fn) params = __atomic_load_n(&slot, __ATOMIC_ACQUIRE); \
    if (fn == NULL) {                                \
      fn = (ret (*) params)sym(#name);               \
      __atomic_store_n(&slot, fn, __ATOMIC_RELEASE); \
    }                                                \
    if (fn == NULL)                                  \
      return FAIL;                                   \
    return fn args;                                  \
  }
#define FWDV(name, params, args)                     \
  void name params {                                 \
    static void (*slot) params;                      \
    void (*fn) params = __atomic_load_n(&slot, __ATOMIC_ACQUIRE); \
    if (fn == NULL) {                                \
      fn = (void (*) params)sym(#name);              \
      __atomic_store_n(&slot, fn, __ATOMIC_RELEASE); \
    }                                                \
    if (fn != NULL)                                  \
      fn args;                                       \
  }
#define EFAIL ((VixError)VIX_E_DISK_SUBSYSTEM_INIT_FAIL)

FWD(VixError, VixDiskLib_InitEx, (uint32 a, uint32 b, VixDiskLibGenericLogFunc *c, VixDiskLibGenericLogFunc *d, VixDiskLibGenericLogFunc *e, const char *f, const char *g), (a, b, c, d, e, f, g), EFAIL)
FWD(VixError, VixDiskLib_Init, (uint32 a, uint32 b, VixDiskLibGenericLogFunc *c, VixDiskLibGenericLogFunc *d, VixDiskLibGenericLogFunc *e, const char *f), (a, b, c, d, e, f), EFAIL)
FWDV(VixDiskLib_Exit, (void), ())
FWD(const char *, VixDiskLib_ListTransportModes, (void), (), NULL)
FWD(char *, VixDiskLib_GetErrorText, (VixError a, const char *b), (a, b), NULL)
FWDV(VixDiskLib_FreeErrorText, (char *a), (a))
FWD(VixDiskLibConnectParams *, VixDiskLib_AllocateConnectParams, (void), (), NULL)
FWDV(VixDiskLib_FreeConnectParams, (VixDiskLibConnectParams *a), (a))
FWD(VixError, VixDiskLib_GetConnectParams, (const VixDiskLibConnection a, VixDiskLibConnectParams **b), (a, b), EFAIL)
FWD(VixError, VixDiskLib_Connect, (const VixDiskLibConnectParams *a, VixDiskLibConnection *b), (a, b), EFAIL)
FWD(VixError, VixDiskLib_ConnectEx, (const VixDiskLibConnectParams *a, Bool b, const char *c, const char *d, VixDiskLibConnection *e), (a, b, c, d, e), EFAIL)
FWD(VixError, VixDiskLib_Disconnect, (VixDiskLibConnection a), (a), EFAIL)
FWD(VixError, VixDiskLib_Cleanup, (const VixDiskLibConnectParams *a, uint32 *b, uint32 *c), (a, b, c), EFAIL)
FWD(VixError, VixDiskLib_PrepareForAccess, (const VixDiskLibConnectParams *a, const char *b), (a, b), EFAIL)
FWD(VixError, VixDiskLib_EndAccess, (const VixDiskLibConnectParams *a, const char *b), (a, b), EFAIL)
FWD(VixError, VixDiskLib_Open, (const VixDiskLibConnection a, const char *b, uint32 c, VixDiskLibHandle *d), (a, b, c, d), EFAIL)
FWD(VixError, VixDiskLib_Close, (VixDiskLibHandle a), (a), EFAIL)
FWD(VixError, VixDiskLib_GetInfo, (VixDiskLibHandle a, VixDiskLibInfo **b), (a, b), EFAIL)
FWDV(VixDiskLib_FreeInfo, (VixDiskLibInfo *a), (a))
FWD(const char *, VixDiskLib_GetTransportMode, (VixDiskLibHandle a), (a), NULL)
FWD(VixError, VixDiskLib_Read, (VixDiskLibHandle a, VixDiskLibSectorType b, VixDiskLibSectorType c, uint8 *d), (a, b, c, d), EFAIL)
FWD(VixError, VixDiskLib_Write, (VixDiskLibHandle a, VixDiskLibSectorType b, VixDiskLibSectorType c, const uint8 *d), (a, b, c, d), EFAIL)
FWD(VixError, VixDiskLib_ReadAsync, (VixDiskLibHandle a, VixDiskLibSectorType b, VixDiskLibSectorType c, uint8 *d, VixDiskLibCompletionCB e, void *f), (a, b, c, d, e, f), EFAIL)
FWD(VixError, VixDiskLib_WriteAsync, (VixDiskLibHandle a, VixDiskLibSectorType b, VixDiskLibSectorType c, const uint8 *d, VixDiskLibCompletionCB e, void *f), (a, b, c, d, e, f), EFAIL)
FWD(VixError, VixDiskLib_Wait, (VixDiskLibHandle a), (a), EFAIL)
FWD(VixError, VixDiskLib_Flush, (VixDiskLibHandle a), (a), EFAIL)
FWD(VixError, VixDiskLib_QueryAllocatedBlocks, (VixDiskLibHandle a, VixDiskLibSectorType b, VixDiskLibSectorType c, VixDiskLibSectorType d, VixDiskLibBlockList **e), (a, b, c, d, e), EFAIL)
FWD(VixError, VixDiskLib_FreeBlockList, (VixDiskLibBlockList *a), (a), EFAIL)
FWD(VixError, VixDiskLib_ReadMetadata, (VixDiskLibHandle a, const char *b, char *c, size_t d, size_t *e), (a, b, c, d, e), EFAIL)
FWD(VixError, VixDiskLib_WriteMetadata, (VixDiskLibHandle a, const char *b, const char *c), (a, b, c), EFAIL)
FWD(VixError, VixDiskLib_GetMetadataKeys, (VixDiskLibHandle a, char *b, size_t c, size_t *d), (a, b, c, d), EFAIL)
FWD(VixError, VixDiskLib_Create, (const VixDiskLibConnection a, const char *b, const VixDiskLibCreateParams *c, VixDiskLibProgressFunc d, void *e), (a, b, c, d, e), EFAIL)
FWD(VixError, VixDiskLib_CreateChild, (VixDiskLibHandle a, const char *b, VixDiskLibDiskType c, VixDiskLibProgressFunc d, void *e), (a, b, c, d, e), EFAIL)
FWD(VixError, VixDiskLib_Clone, (const VixDiskLibConnection a, const char *b, const VixDiskLibConnection c, const char *d, const VixDiskLibCreateParams *e, VixDiskLibProgressFunc f, void *g, Bool h), (a, b, c, d, e, f, g, h), EFAIL)
FWD(VixError, VixDiskLib_Grow, (VixDiskLibConnection a, const char *b, VixDiskLibSectorType c, Bool d, VixDiskLibProgressFunc e, void *f), (a, b, c, d, e, f), EFAIL)
FWD(VixError, VixDiskLib_Shrink, (VixDiskLibHandle a, VixDiskLibProgressFunc b, void *c), (a, b, c), EFAIL)
FWD(VixError, VixDiskLib_Defragment, (VixDiskLibHandle a, VixDiskLibProgressFunc b, void *c), (a, b, c), EFAIL)
FWD(VixError, VixDiskLib_Rename, (const char *a, const char *b), (a, b), EFAIL)
FWD(VixError, VixDiskLib_Unlink, (VixDiskLibConnection a, const char *b), (a, b), EFAIL)
FWD(VixError, VixDiskLib_SpaceNeededForClone, (VixDiskLibHandle a, VixDiskLibDiskType b, uint64 *c), (a, b, c), EFAIL)
FWD(VixError, VixDiskLib_CheckRepair, (const VixDiskLibConnection a, const char *b, Bool c), (a, b, c), EFAIL)
FWD(VixError, VixDiskLib_IsAttachPossible, (VixDiskLibHandle a, VixDiskLibHandle b), (a, b), EFAIL)
FWD(VixError, VixDiskLib_Attach, (VixDiskLibHandle a, VixDiskLibHandle b), (a, b), EFAIL)
