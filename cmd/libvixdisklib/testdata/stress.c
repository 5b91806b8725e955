/* stress.c: many threads on one VixDiskLib handle at once, checked
 * against a model. Run by TestConcurrentHandle against vdisk's
 * libvixDiskLib.
 *
 *   stress WORKDIR [unbuffered]       a new local monolithicSparse disk
 *                                     (unbuffered: opened with O_DIRECT)
 *   stress WORKDIR SERVER PORT USER PASSWORD THUMBPRINT MOREF PATH MODES
 *                                     a host's disk, by datastore path
 *
 * Each thread owns a slice of the disk and keeps its bytes in memory. It
 * writes and reads its slice with Read/Write and with batches of
 * ReadAsync/WriteAsync (several requests in flight, completed through
 * callbacks on library threads), sync and async mixed on the one handle,
 * at odd sector offsets and lengths, and checks every read against its
 * model. One more thread asks QueryAllocatedBlocks all the while. At the
 * end the disk is flushed, closed, reopened read-only and read whole
 * against the model, which is also written to WORKDIR/model.raw for the
 * test to compare with qemu-img's reading. Then eight threads at once open
 * the disk read-only, on the shared connection and on connections of
 * their own, read it against the model and close it again. Exits 1 at the
 * first difference. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixcheck.h"

#define FAIL(...)                     \
  do {                                \
    fprintf(stderr, __VA_ARGS__);     \
    fputc('\n', stderr);              \
    exit(1);                          \
  } while (0)

enum { THREADS = 8, ROUNDS = 120, BATCH = 8, MAXSECT = 160 };

static VixDiskLibHandle h;
static uint64 sectors;       /* the disk's capacity */
static uint64 slice;         /* sectors per thread */
static uint8 *model;         /* the whole disk as it should read */
static volatile int writers; /* threads still running */

/* A batch's completion count, signalled by the callback. */
struct batch {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int left, failed;
};

static void done(void *data, VixError result) {
  struct batch *b = data;
  pthread_mutex_lock(&b->mu);
  if (result != VIX_OK)
    b->failed++;
  b->left--;
  pthread_cond_signal(&b->cond);
  pthread_mutex_unlock(&b->mu);
}

static void fill(uint8 *p, size_t n, unsigned *seed) {
  size_t i;
  for (i = 0; i < n; i++)
    p[i] = (uint8)rand_r(seed);
}

static void verify(const uint8 *got, uint64 sector, uint64 n, const char *what) {
  const uint8 *want = model + sector * VIXDISKLIB_SECTOR_SIZE;
  size_t i;
  if (memcmp(got, want, n * VIXDISKLIB_SECTOR_SIZE) == 0)
    return;
  for (i = 0; got[i] == want[i]; i++)
    ;
  FAIL("%s of sectors %llu+%llu differs at byte %llu", what, (unsigned long long)sector,
       (unsigned long long)n, (unsigned long long)(sector * VIXDISKLIB_SECTOR_SIZE + i));
}

/* pick chooses a range of 1..MAXSECT sectors inside [lo, lo+span). */
static void pick(uint64 lo, uint64 span, unsigned *seed, uint64 *start, uint64 *n) {
  *n = 1 + (uint64)rand_r(seed) % (span < MAXSECT ? span : MAXSECT);
  *start = lo + (uint64)rand_r(seed) % (span - *n + 1);
}

static void *worker(void *arg) {
  int id = (int)(long)arg;
  unsigned seed = 1000 + id;
  uint64 lo = (uint64)id * slice;
  uint8 *buf = malloc(MAXSECT * VIXDISKLIB_SECTOR_SIZE);
  uint8 *abuf[BATCH];
  uint64 astart[BATCH], an[BATCH];
  int awrite[BATCH];
  struct batch b;
  int r, i;

  pthread_mutex_init(&b.mu, NULL);
  pthread_cond_init(&b.cond, NULL);
  for (i = 0; i < BATCH; i++)
    abuf[i] = malloc(MAXSECT * VIXDISKLIB_SECTOR_SIZE);
  for (r = 0; r < ROUNDS; r++) {
    uint64 s, n;
    switch (rand_r(&seed) % 3) {
    case 0: /* a synchronous write, then a read of an overlapping range */
      pick(lo, slice, &seed, &s, &n);
      fill(buf, n * VIXDISKLIB_SECTOR_SIZE, &seed);
      CHECK(VixDiskLib_Write(h, s, n, buf));
      memcpy(model + s * VIXDISKLIB_SECTOR_SIZE, buf, n * VIXDISKLIB_SECTOR_SIZE);
      pick(lo, slice, &seed, &s, &n);
      CHECK(VixDiskLib_Read(h, s, n, buf));
      verify(buf, s, n, "Read");
      break;
    default: /* a batch of asynchronous requests, one per part of the slice */
      b.left = BATCH;
      b.failed = 0;
      for (i = 0; i < BATCH; i++) {
        uint64 part = slice / BATCH;
        VixError e;
        pick(lo + i * part, part, &seed, &astart[i], &an[i]);
        awrite[i] = rand_r(&seed) % 2;
        if (awrite[i]) {
          fill(abuf[i], an[i] * VIXDISKLIB_SECTOR_SIZE, &seed);
          memcpy(model + astart[i] * VIXDISKLIB_SECTOR_SIZE, abuf[i], an[i] * VIXDISKLIB_SECTOR_SIZE);
          e = VixDiskLib_WriteAsync(h, astart[i], an[i], abuf[i], done, &b);
        } else {
          e = VixDiskLib_ReadAsync(h, astart[i], an[i], abuf[i], done, &b);
        }
        if (e != VIX_ASYNC)
          FAIL("%s returned %llu, not VIX_ASYNC", awrite[i] ? "WriteAsync" : "ReadAsync", (unsigned long long)e);
      }
      pthread_mutex_lock(&b.mu);
      while (b.left > 0)
        pthread_cond_wait(&b.cond, &b.mu);
      pthread_mutex_unlock(&b.mu);
      if (b.failed)
        FAIL("%d asynchronous requests failed", b.failed);
      for (i = 0; i < BATCH; i++)
        if (!awrite[i])
          verify(abuf[i], astart[i], an[i], "ReadAsync");
      if (r % 16 == 0)
        CHECK(VixDiskLib_Wait(h)); /* waits for every thread's requests */
    }
  }
  for (i = 0; i < BATCH; i++)
    free(abuf[i]);
  free(buf);
  pthread_cond_destroy(&b.cond);
  pthread_mutex_destroy(&b.mu);
  __sync_fetch_and_sub(&writers, 1);
  return NULL;
}

/* querier asks for the allocated blocks while the writers run. */
static void *querier(void *arg) {
  int calls = 0;
  (void)arg;
  while (writers > 0 || calls == 0) {
    VixDiskLibBlockList *bl;
    CHECK(VixDiskLib_QueryAllocatedBlocks(h, 0, sectors, VIXDISKLIB_MIN_CHUNK_SIZE, &bl));
    CHECK(VixDiskLib_FreeBlockList(bl));
    calls++;
  }
  printf("allocation queries %d\n", calls);
  return NULL;
}

/* The second phase: threads open, read and close handles of their own at
 * once, on the shared connection and on connections of their own. */
static VixDiskLibConnection shared_conn;
static VixDiskLibConnectParams *params;
static const char *disk_path;
static const char *modes;

static void *opener(void *arg) {
  int id = (int)(long)arg, k;
  unsigned seed = 2000 + id;
  uint8 *buf = malloc(MAXSECT * VIXDISKLIB_SECTOR_SIZE);
  for (k = 0; k < 6; k++) {
    VixDiskLibConnection conn = shared_conn;
    VixDiskLibHandle oh;
    VixDiskLibInfo *info;
    VixDiskLibBlockList *bl;
    uint64 s, n;
    int j;
    if (k % 2 == 1)
      CHECK(VixDiskLib_ConnectEx(params, TRUE, NULL, modes, &conn));
    CHECK(VixDiskLib_Open(conn, disk_path, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &oh));
    CHECK(VixDiskLib_GetInfo(oh, &info));
    if (info->capacity != sectors)
      FAIL("a concurrent open sees %llu sectors", (unsigned long long)info->capacity);
    VixDiskLib_FreeInfo(info);
    for (j = 0; j < 8; j++) {
      pick(0, sectors, &seed, &s, &n);
      CHECK(VixDiskLib_Read(oh, s, n, buf));
      verify(buf, s, n, "a concurrently opened handle's Read");
    }
    CHECK(VixDiskLib_QueryAllocatedBlocks(oh, 0, sectors, VIXDISKLIB_MIN_CHUNK_SIZE, &bl));
    CHECK(VixDiskLib_FreeBlockList(bl));
    CHECK(VixDiskLib_Close(oh));
    if (conn != shared_conn)
      CHECK(VixDiskLib_Disconnect(conn));
  }
  free(buf);
  return NULL;
}

static void logf_(const char *fmt, va_list ap) {
  (void)fmt;
  (void)ap;
}

int main(int argc, char **argv) {
  VixDiskLibConnectParams *cp;
  VixDiskLibConnection conn;
  VixDiskLibInfo *info;
  pthread_t t[THREADS + 1];
  char path[4096], out[4096];
  uint8 *buf;
  uint64 s;
  int remote = argc == 10, i;
  uint32 flags = argc == 3 && strcmp(argv[2], "unbuffered") == 0 ? VIXDISKLIB_FLAG_OPEN_UNBUFFERED : 0;
  FILE *f;

  if (argc != 2 && !remote && flags == 0)
    return 2;
  CHECK(VixDiskLib_InitEx(VIXDISKLIB_VERSION_MAJOR, VIXDISKLIB_VERSION_MINOR, logf_, logf_, logf_, NULL, NULL));
  cp = VixDiskLib_AllocateConnectParams();
  if (remote) {
    cp->serverName = argv[2];
    cp->port = (uint32)atoi(argv[3]);
    cp->credType = VIXDISKLIB_CRED_UID;
    cp->creds.uid.userName = argv[4];
    cp->creds.uid.password = argv[5];
    cp->thumbPrint = argv[6];
    cp->vmxSpec = argv[7];
    snprintf(path, sizeof path, "%s", argv[8]);
    CHECK(VixDiskLib_ConnectEx(cp, FALSE, NULL, argv[9], &conn));
  } else {
    VixDiskLibCreateParams c;
    memset(&c, 0, sizeof c);
    c.diskType = VIXDISKLIB_DISK_MONOLITHIC_SPARSE;
    c.adapterType = VIXDISKLIB_ADAPTER_SCSI_LSILOGIC;
    c.hwVersion = VIXDISKLIB_HWVERSION_WORKSTATION_5;
    c.capacity = 64 << 11; /* 64 MiB */
    snprintf(path, sizeof path, "%s/stress.vmdk", argv[1]);
    CHECK(VixDiskLib_ConnectEx(cp, FALSE, NULL, NULL, &conn));
    CHECK(VixDiskLib_Create(conn, path, &c, NULL, NULL));
  }
  CHECK(VixDiskLib_Open(conn, path, flags, &h));
  CHECK(VixDiskLib_GetInfo(h, &info));
  sectors = info->capacity;
  VixDiskLib_FreeInfo(info);
  slice = sectors / THREADS;
  model = malloc(sectors * VIXDISKLIB_SECTOR_SIZE);
  for (s = 0; s < sectors; s += 2048) /* the disk as it starts */
    CHECK(VixDiskLib_Read(h, s, sectors - s < 2048 ? sectors - s : 2048, model + s * VIXDISKLIB_SECTOR_SIZE));

  writers = THREADS;
  for (i = 0; i < THREADS; i++)
    if (pthread_create(&t[i], NULL, worker, (void *)(long)i) != 0)
      FAIL("pthread_create");
  if (pthread_create(&t[THREADS], NULL, querier, NULL) != 0)
    FAIL("pthread_create");
  for (i = 0; i <= THREADS; i++)
    pthread_join(t[i], NULL);
  CHECK(VixDiskLib_Flush(h));
  CHECK(VixDiskLib_Close(h));

  CHECK(VixDiskLib_Open(conn, path, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h));
  buf = malloc(2048 * VIXDISKLIB_SECTOR_SIZE);
  for (s = 0; s < sectors; s += 2048) {
    uint64 n = sectors - s < 2048 ? sectors - s : 2048;
    CHECK(VixDiskLib_Read(h, s, n, buf));
    verify(buf, s, n, "the reopened disk's read");
  }
  free(buf);
  CHECK(VixDiskLib_Close(h));

  shared_conn = conn;
  params = cp;
  disk_path = path;
  modes = remote ? argv[9] : NULL;
  for (i = 0; i < THREADS; i++)
    if (pthread_create(&t[i], NULL, opener, (void *)(long)i) != 0)
      FAIL("pthread_create");
  for (i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  printf("concurrent opens ok\n");
  CHECK(VixDiskLib_Disconnect(conn));
  VixDiskLib_FreeConnectParams(cp);
  VixDiskLib_Exit();

  snprintf(out, sizeof out, "%s/model.raw", argv[1]);
  f = fopen(out, "wb");
  if (f == NULL || fwrite(model, VIXDISKLIB_SECTOR_SIZE, sectors, f) != sectors || fclose(f) != 0)
    FAIL("writing %s", out);
  free(model);
  printf("stress ok: %d threads, %llu sectors\n", THREADS, (unsigned long long)sectors);
  return 0;
}
