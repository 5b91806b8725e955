/* sample.c: a VDDK-sample-style program run by TestSample against vdisk's
 * libvixDiskLib. Usage: sample WORKDIR. Prints one line per step; exits 1 at
 * the first failure. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixcheck.h"

static void logf_(const char *fmt, va_list ap) {
  fputs("log: ", stdout);
  vprintf(fmt, ap);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int completed, failed;
static pthread_t main_thread;
static int on_main;

static void done(void *data, VixError result) {
  pthread_mutex_lock(&lock);
  completed++;
  if (result != VIX_OK)
    failed++;
  if (pthread_equal(pthread_self(), main_thread))
    on_main++;
  pthread_mutex_unlock(&lock);
  (void)data;
}

static int progress_calls;
static Bool progress(void *data, int pct) {
  (void)data;
  if (pct >= 0 && pct <= 100)
    progress_calls++;
  return TRUE;
}

int main(int argc, char **argv) {
  char path[4096], clonePath[4096], childPath[4096], cfg[4096];
  VixDiskLibConnection conn;
  VixDiskLibHandle h, child;
  VixDiskLibInfo *info;
  VixDiskLibBlockList *bl;
  enum { N = 16 };
  uint8 *buf, *back, *abuf[N];
  size_t need;
  char val[64];
  FILE *f;
  int i;

  if (argc != 2)
    return 2;
  main_thread = pthread_self();
  snprintf(path, sizeof path, "%s/base.vmdk", argv[1]);
  snprintf(clonePath, sizeof clonePath, "%s/clone.vmdk", argv[1]);
  snprintf(childPath, sizeof childPath, "%s/child.vmdk", argv[1]);
  snprintf(cfg, sizeof cfg, "%s/vddk.conf", argv[1]);
  f = fopen(cfg, "w");
  fprintf(f, "# test\ntmpDirectory = \"%s\"\nvixDiskLib.transport.LogLevel = 4\nvixDiskLib.nfc.ReadTimeoutMs = 90000\nsome.unknown.key = 1\n", argv[1]);
  fclose(f);

  CHECK(VixDiskLib_InitEx(VIXDISKLIB_VERSION_MAJOR, VIXDISKLIB_VERSION_MINOR, logf_, logf_, logf_, argv[1], cfg));
  printf("modes %s\n", VixDiskLib_ListTransportModes());
  {
    /* Parameters the caller fills with its own strings: Free leaves them. */
    static char none[] = "";
    VixDiskLibConnectParams *cp = VixDiskLib_AllocateConnectParams(), *got;
    cp->vmxSpec = none;
    CHECK(VixDiskLib_ConnectEx(cp, FALSE, NULL, NULL, &conn));
    VixDiskLib_FreeConnectParams(cp);
    CHECK(VixDiskLib_GetConnectParams(conn, &got));
    printf("params server=%s\n", got->serverName ? got->serverName : "(local)");
    VixDiskLib_FreeConnectParams(got);
  }

  VixDiskLibCreateParams cp = {VIXDISKLIB_DISK_MONOLITHIC_SPARSE, VIXDISKLIB_ADAPTER_SCSI_LSILOGIC,
                               VIXDISKLIB_HWVERSION_WORKSTATION_6, 131072, 0, 0};
  CHECK(VixDiskLib_Create(conn, path, &cp, progress, NULL));
  CHECK(VixDiskLib_Open(conn, path, 0, &h));
  printf("transport %s\n", VixDiskLib_GetTransportMode(h));

  CHECK(VixDiskLib_GetInfo(h, &info));
  printf("info capacity=%llu adapter=%d links=%d uuid=%s\n", (unsigned long long)info->capacity,
         info->adapterType, info->numLinks, info->uuid ? info->uuid : "(none)");
  VixDiskLib_FreeInfo(info);

  buf = malloc(128 * 512);
  back = malloc(128 * 512);
  for (i = 0; i < 128 * 512; i++)
    buf[i] = (uint8)(i * 7 + 3);
  CHECK(VixDiskLib_Write(h, 2048, 128, buf));
  CHECK(VixDiskLib_Read(h, 2048, 128, back));
  if (memcmp(buf, back, 128 * 512) != 0) {
    fprintf(stderr, "read back differs\n");
    return 1;
  }
  printf("read back ok\n");

  /* Writes far from the first, then asynchronous reads of both. */
  for (i = 0; i < N; i++) {
    abuf[i] = calloc(128, 512);
    if (VixDiskLib_WriteAsync(h, 65536 + (VixDiskLibSectorType)i * 128, 128, buf, done, NULL) != VIX_ASYNC) {
      fprintf(stderr, "WriteAsync not queued\n");
      return 1;
    }
  }
  CHECK(VixDiskLib_Wait(h));
  for (i = 0; i < N; i++) {
    if (VixDiskLib_ReadAsync(h, 65536 + (VixDiskLibSectorType)i * 128, 128, abuf[i], done, NULL) != VIX_ASYNC) {
      fprintf(stderr, "ReadAsync not queued\n");
      return 1;
    }
  }
  CHECK(VixDiskLib_Wait(h));
  for (i = 0; i < N; i++) {
    if (memcmp(abuf[i], buf, 128 * 512) != 0) {
      fprintf(stderr, "async read %d differs\n", i);
      return 1;
    }
    free(abuf[i]);
  }
  if (completed != 2 * N || failed != 0 || on_main != 0) {
    fprintf(stderr, "async: %d completed, %d failed, %d on the caller's thread\n", completed, failed, on_main);
    return 1;
  }
  printf("async ok\n");
  CHECK(VixDiskLib_Flush(h));

  /* Out of range is refused. */
  if (VIX_ERROR_CODE(VixDiskLib_Read(h, 131072 - 1, 2, back)) != VIX_E_DISK_OUTOFRANGE) {
    fprintf(stderr, "read past the end not refused\n");
    return 1;
  }

  CHECK(VixDiskLib_QueryAllocatedBlocks(h, 0, 131072, VIXDISKLIB_MIN_CHUNK_SIZE, &bl));
  printf("allocated blocks=%u", bl->numBlocks);
  for (i = 0; i < (int)bl->numBlocks; i++)
    printf(" %llu+%llu", (unsigned long long)bl->blocks[i].offset, (unsigned long long)bl->blocks[i].length);
  printf("\n");
  CHECK(VixDiskLib_FreeBlockList(bl));

  CHECK(VixDiskLib_WriteMetadata(h, "vdisk.test", "hello"));
  if (VixDiskLib_ReadMetadata(h, "vdisk.test", NULL, 0, &need) != VIX_E_BUFFER_TOOSMALL || need != 6) {
    fprintf(stderr, "ReadMetadata size protocol\n");
    return 1;
  }
  CHECK(VixDiskLib_ReadMetadata(h, "vdisk.test", val, sizeof val, &need));
  printf("metadata vdisk.test=%s\n", val);
  if (VixDiskLib_ReadMetadata(h, "no.such.key", val, sizeof val, &need) != VIX_E_DISK_KEY_NOTFOUND) {
    fprintf(stderr, "unknown key not refused\n");
    return 1;
  }
  VixDiskLib_GetMetadataKeys(h, NULL, 0, &need);
  {
    char *keys = malloc(need);
    CHECK(VixDiskLib_GetMetadataKeys(h, keys, need, &need));
    int found = 0;
    for (char *k = keys; *k; k += strlen(k) + 1)
      if (strcmp(k, "adapterType") == 0)
        found = 1;
    printf("keys adapterType=%d\n", found);
    free(keys);
  }
  {
    uint64 space = 0;
    CHECK(VixDiskLib_SpaceNeededForClone(h, VIXDISKLIB_DISK_UNKNOWN, &space));
    printf("space %llu\n", (unsigned long long)space);
  }
  CHECK(VixDiskLib_Close(h));

  progress_calls = 0;
  CHECK(VixDiskLib_Clone(conn, clonePath, conn, path, NULL, progress, NULL, FALSE));
  if (progress_calls == 0) {
    fprintf(stderr, "no progress reported\n");
    return 1;
  }
  if (VixDiskLib_Clone(conn, clonePath, conn, path, NULL, NULL, NULL, FALSE) != VIX_E_FILE_ALREADY_EXISTS) {
    fprintf(stderr, "clone over an existing file not refused\n");
    return 1;
  }
  {
    /* A streamOptimized clone, written as it is made (the way an OVF
     * export makes its disks), read back. */
    char streamPath[4096];
    VixDiskLibCreateParams cp;
    VixDiskLibHandle sh;
    memset(&cp, 0, sizeof cp);
    cp.diskType = VIXDISKLIB_DISK_STREAM_OPTIMIZED;
    cp.adapterType = VIXDISKLIB_ADAPTER_SCSI_LSILOGIC;
    cp.hwVersion = VIXDISKLIB_HWVERSION_WORKSTATION_5;
    snprintf(streamPath, sizeof streamPath, "%s/stream.vmdk", argv[1]);
    CHECK(VixDiskLib_Clone(conn, streamPath, conn, path, &cp, NULL, NULL, FALSE));
    CHECK(VixDiskLib_Open(conn, streamPath, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &sh));
    CHECK(VixDiskLib_Read(sh, 2048, 128, back));
    if (memcmp(buf, back, 128 * 512) != 0) {
      fprintf(stderr, "the streamOptimized clone reads differently\n");
      return 1;
    }
    CHECK(VixDiskLib_Close(sh));
    printf("stream clone ok\n");
  }
  printf("clone ok\n");
  CHECK(VixDiskLib_CheckRepair(conn, clonePath, FALSE));
  printf("check ok\n");

  {
    /* Grow a closed disk, then shrink and defragment it through a handle. */
    char grown[4096], renamed[4096];
    snprintf(grown, sizeof grown, "%s/grown.vmdk", argv[1]);
    snprintf(renamed, sizeof renamed, "%s/renamed.vmdk", argv[1]);
    CHECK(VixDiskLib_Clone(conn, grown, conn, path, NULL, NULL, NULL, FALSE));
    CHECK(VixDiskLib_Grow(conn, grown, 262144, FALSE, NULL, NULL));
    CHECK(VixDiskLib_Open(conn, grown, 0, &h));
    CHECK(VixDiskLib_GetInfo(h, &info));
    if (info->capacity != 262144) {
      fprintf(stderr, "grown to %llu sectors\n", (unsigned long long)info->capacity);
      return 1;
    }
    VixDiskLib_FreeInfo(info);
    CHECK(VixDiskLib_Shrink(h, progress, NULL));
    CHECK(VixDiskLib_Defragment(h, NULL, NULL));
    CHECK(VixDiskLib_Read(h, 2048, 128, back));
    if (memcmp(buf, back, 128 * 512) != 0) {
      fprintf(stderr, "data lost by shrink\n");
      return 1;
    }
    CHECK(VixDiskLib_Close(h));
    CHECK(VixDiskLib_CheckRepair(conn, grown, FALSE));
    CHECK(VixDiskLib_Rename(grown, renamed));
    CHECK(VixDiskLib_Open(conn, renamed, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h));
    CHECK(VixDiskLib_Close(h));
    printf("grow shrink rename ok\n");
  }

  CHECK(VixDiskLib_Open(conn, clonePath, 0, &h));
  CHECK(VixDiskLib_CreateChild(h, childPath, VIXDISKLIB_DISK_MONOLITHIC_SPARSE, NULL, NULL));
  CHECK(VixDiskLib_Close(h));
  CHECK(VixDiskLib_Open(conn, childPath, 0, &child));
  CHECK(VixDiskLib_GetInfo(child, &info));
  printf("child links=%d parent=%s\n", info->numLinks, info->parentFileNameHint ? info->parentFileNameHint : "(none)");
  if (info->numLinks != 2) {
    fprintf(stderr, "child has %d links\n", info->numLinks);
    return 1;
  }
  VixDiskLib_FreeInfo(info);
  CHECK(VixDiskLib_Read(child, 2048, 128, back));
  if (memcmp(buf, back, 128 * 512) != 0) {
    fprintf(stderr, "child does not read its parent\n");
    return 1;
  }
  CHECK(VixDiskLib_Open(conn, clonePath, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h));
  CHECK(VixDiskLib_IsAttachPossible(h, child));
  CHECK(VixDiskLib_Close(h));
  /* Move the child onto base.vmdk: the parent handle ends, the child
   * handle is the new chain. */
  CHECK(VixDiskLib_Open(conn, path, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h));
  CHECK(VixDiskLib_Attach(h, child));
  if (VixDiskLib_Close(h) != VIX_E_INVALID_HANDLE) {
    fprintf(stderr, "the parent handle outlived Attach\n");
    return 1;
  }
  CHECK(VixDiskLib_GetInfo(child, &info));
  printf("attached parent=%s\n", info->parentFileNameHint ? info->parentFileNameHint : "(none)");
  VixDiskLib_FreeInfo(info);
  CHECK(VixDiskLib_Read(child, 2048, 128, back));
  if (memcmp(buf, back, 128 * 512) != 0) {
    fprintf(stderr, "the attached child does not read its new parent\n");
    return 1;
  }
  CHECK(VixDiskLib_Close(child));
  printf("child ok\n");

  if (VixDiskLib_Read((VixDiskLibHandle)(uintptr_t)12345, 0, 1, back) != VIX_E_INVALID_HANDLE ||
      VixDiskLib_GetTransportMode(NULL) != NULL) {
    fprintf(stderr, "a bad handle was not refused\n");
    return 1;
  }
  printf("bad handle refused\n");
  {
    char *t = VixDiskLib_GetErrorText(VIX_E_INVALID_HANDLE, NULL);
    printf("error text: %s\n", t);
    VixDiskLib_FreeErrorText(t);
  }
  CHECK(VixDiskLib_Unlink(conn, childPath));
  CHECK(VixDiskLib_Disconnect(conn));
  VixDiskLib_Exit();
  free(buf);
  free(back);
  printf("done\n");
  return 0;
}
