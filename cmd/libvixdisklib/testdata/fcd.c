/* fcd.c: reads a first class disk (VDDK 6.7's detached disk spec) from a
 * host, as a VDDK program backing up a detached disk does: parameters
 * from AllocateConnectParams with specType VIXDISKLIB_SPEC_VSTORAGE_OBJECT,
 * PrepareForAccess, ConnectEx with a NULL snapshotRef, Open with a NULL
 * path, then the disk's bytes to OUT, Close, Disconnect, EndAccess. Run
 * by TestFirstClassDisk.
 *
 *   fcd SERVER PORT USER PASSWORD THUMBPRINT ID SNAPSHOT-ID|- OUT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vixcheck.h"

int main(int argc, char **argv) {
  VixDiskLibConnectParams *cp, *got;
  VixDiskLibConnection conn;
  VixDiskLibHandle h;
  VixDiskLibInfo *info;
  uint8 *buf;
  uint64 s;
  FILE *out;

  if (argc != 9)
    return 2;
  CHECK(VixDiskLib_InitEx(VIXDISKLIB_VERSION_MAJOR, VIXDISKLIB_VERSION_MINOR, NULL, NULL, NULL, NULL, NULL));
  cp = VixDiskLib_AllocateConnectParams();
  cp->serverName = argv[1];
  cp->port = (uint32)atoi(argv[2]);
  cp->credType = VIXDISKLIB_CRED_UID;
  cp->creds.uid.userName = argv[3];
  cp->creds.uid.password = argv[4];
  cp->thumbPrint = argv[5];
  cp->specType = VIXDISKLIB_SPEC_VSTORAGE_OBJECT;
  cp->spec.vStorageObjSpec.id = argv[6];
  cp->spec.vStorageObjSpec.datastoreMoRef = "datastore-1";
  cp->spec.vStorageObjSpec.ssId = strcmp(argv[7], "-") == 0 ? NULL : argv[7];

  CHECK(VixDiskLib_PrepareForAccess(cp, "fcd-test"));
  printf("prepared\n");
  fflush(stdout);
  CHECK(VixDiskLib_ConnectEx(cp, TRUE, NULL, "nbdssl", &conn));
  CHECK(VixDiskLib_GetConnectParams(conn, &got));
  if (got->specType != VIXDISKLIB_SPEC_VSTORAGE_OBJECT || got->spec.vStorageObjSpec.id == NULL ||
      strcmp(got->spec.vStorageObjSpec.id, argv[6]) != 0) {
    fprintf(stderr, "GetConnectParams lost the first class disk spec\n");
    return 1;
  }
  VixDiskLib_FreeConnectParams(got);
  CHECK(VixDiskLib_Open(conn, NULL, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h));
  CHECK(VixDiskLib_GetInfo(h, &info));
  printf("capacity %llu\n", (unsigned long long)info->capacity);
  out = fopen(argv[8], "wb");
  buf = malloc(2048 * VIXDISKLIB_SECTOR_SIZE);
  for (s = 0; s < info->capacity; s += 2048) {
    uint64 n = info->capacity - s < 2048 ? info->capacity - s : 2048;
    CHECK(VixDiskLib_Read(h, s, n, buf));
    if (fwrite(buf, VIXDISKLIB_SECTOR_SIZE, n, out) != n)
      return 1;
  }
  fclose(out);
  free(buf);
  VixDiskLib_FreeInfo(info);
  CHECK(VixDiskLib_Close(h));
  CHECK(VixDiskLib_Disconnect(conn));
  printf("read\n");
  fflush(stdout);
  if (getenv("FCD_WAIT") != NULL) {
    char line[16];
    /* The test checks the lease, then lets EndAccess run. */
    if (fgets(line, sizeof line, stdin) == NULL)
      return 1;
  }
  CHECK(VixDiskLib_EndAccess(cp, "fcd-test"));
  VixDiskLib_FreeConnectParams(cp);
  VixDiskLib_Exit();
  printf("done\n");
  return 0;
}
